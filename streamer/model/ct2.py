"""Reader for CTranslate2 Whisper models (the format faster-whisper uses).

model.bin layout (little-endian): uint32 binary version; (version >= 2) spec name and uint32 spec
revision; uint32 variable count, then per variable: name, uint8 rank, uint32 dims[rank], uint8 dtype
(version >= 4), uint32 byte count and the raw bytes; then uint32 alias count and (alias, target) name
pairs. Strings are a uint16 length and that many bytes, NUL-terminated.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Collection
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from streamer.errors import ModelFileError
from streamer.model.dims import ModelDimensions

# CTranslate2's DataType enum.
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16, reinterpreted below
}


class _Reader:
    def __init__(self, data: memoryview, path: Path):
        self.data = data
        self.pos = 0
        self.path = path

    def take(self, n: int, what: str) -> memoryview:
        if self.pos + n > len(self.data):
            raise ModelFileError(f"{self.path}: truncated model file (ends inside {what})")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str) -> tuple[int, ...]:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))

    def string(self, what: str) -> str:
        (n,) = self.unpack("H", what)
        raw = bytes(self.take(n, what))
        try:
            return raw.rstrip(b"\0").decode("utf-8")
        except UnicodeDecodeError as e:
            raise ModelFileError(f"{self.path}: corrupt model file (bad string in {what})") from e


def read_model_bin(
    data: bytes | bytearray | memoryview, path: Path, borrow: Collection[str] = ()
) -> dict[str, Tensor]:
    """Parse a CTranslate2 WhisperSpec model.bin into float/int tensors by name (aliases resolved).
    Every tensor is a copy, except those named in ``borrow`` when ``data`` is writable: views of it (a
    private mapping of the file, whose pages are then read only where the tensor is)."""
    r = _Reader(memoryview(data), path)
    (version,) = r.unpack("I", "header")
    if not 1 <= version <= 10:
        raise ModelFileError(f"{path}: not a CTranslate2 model (unknown binary version {version})")
    if version >= 2:
        spec = r.string("header")
        r.unpack("I", "header")  # spec revision
        if spec != "WhisperSpec":
            raise ModelFileError(f"{path}: not a Whisper model (CTranslate2 spec {spec!r})")
    (count,) = r.unpack("I", "header")
    variables: dict[str, Tensor] = {}
    for _ in range(count):
        name = r.string("a variable name")
        (rank,) = r.unpack("B", name)
        shape = r.unpack("I" * rank, name)
        if version >= 4:
            (code,) = r.unpack("B", name)
            (nbytes,) = r.unpack("I", name)
        else:
            (item_size,) = r.unpack("B", name)
            code = {4: 0, 2: 4, 1: 1}.get(item_size, -1)
            (nbytes,) = r.unpack("I", name)
        if code not in _DTYPES:
            raise ModelFileError(f"{path}: corrupt model file (unknown dtype {code} for {name})")
        dtype = _DTYPES[code]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if nbytes != expected:
            raise ModelFileError(f"{path}: corrupt model file ({name} has {nbytes} bytes, expected {expected})")
        array = np.frombuffer(r.take(nbytes, name), dtype=dtype).reshape(shape)
        if code == 5:
            tensor = torch.from_numpy(array.astype(np.int16)).view(torch.bfloat16)
        elif name in borrow and not r.data.readonly:
            tensor = torch.from_numpy(array)
        else:
            tensor = torch.from_numpy(array.copy())
        variables[name] = tensor
    if r.pos < len(r.data):
        (n_alias,) = r.unpack("I", "the alias table")
        for _ in range(n_alias):
            alias = r.string("the alias table")
            target = r.string("the alias table")
            if target not in variables:
                raise ModelFileError(f"{path}: corrupt model file (alias {alias} of unknown {target})")
            variables[alias] = variables[target]
    return variables


def _dequantize(variables: dict[str, Tensor]) -> dict[str, Tensor]:
    """int8/int16 weights stored with a per-row ``weight_scale`` become float32."""
    out = dict(variables)
    for name, scale in variables.items():
        if name.endswith("/weight_scale"):
            weight_name = name[: -len("_scale")]
            weight = variables[weight_name].float()
            out[weight_name] = weight / scale.float().reshape(-1, *([1] * (weight.dim() - 1)))
            del out[name]
    return out


def _count_layers(variables: dict[str, Tensor], prefix: str) -> int:
    pattern = re.compile(rf"^{prefix}/layer_(\d+)/")
    found = {int(m.group(1)) for name in variables if (m := pattern.match(name))}
    return max(found) + 1 if found else 0


def convert_ct2(variables: dict[str, Tensor], path: Path) -> tuple[ModelDimensions, dict[str, Tensor]]:
    """Map CTranslate2 Whisper variables to our module names; returns the dimensions and a state dict."""
    v = _dequantize(variables)
    try:
        conv1 = v["encoder/conv1/weight"]
        emb = v["decoder/embeddings/weight"]
        dims = ModelDimensions(
            n_mels=conv1.shape[1],
            n_audio_ctx=v["encoder/position_encodings/encodings"].shape[0],
            n_audio_state=conv1.shape[0],
            n_audio_head=int(v["encoder/num_heads"].item()),
            n_audio_layer=_count_layers(v, "encoder"),
            n_vocab=emb.shape[0],
            n_text_ctx=v["decoder/position_encodings/encodings"].shape[0],
            n_text_state=emb.shape[1],
            n_text_head=int(v["decoder/num_heads"].item()),
            n_text_layer=_count_layers(v, "decoder"),
        )
    except KeyError as e:
        raise ModelFileError(f"{path}: not a Whisper model (missing variable {e.args[0]})") from e

    sd: dict[str, Tensor] = {}

    def linear(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/weight"]
        if f"{src}/bias" in v:
            sd[f"{dst}.bias"] = v[f"{src}/bias"]

    def norm(dst: str, src: str) -> None:
        sd[f"{dst}.weight"] = v[f"{src}/gamma"]
        sd[f"{dst}.bias"] = v[f"{src}/beta"]

    def split(dst: list[str], src: str) -> None:
        """A fused projection (QKV or KV) into separate linears; the key has no bias."""
        weights = v[f"{src}/weight"].chunk(len(dst), dim=0)
        biases = v[f"{src}/bias"].chunk(len(dst), dim=0)
        for name, w, b in zip(dst, weights, biases, strict=True):
            sd[f"{name}.weight"] = w
            if not name.endswith(".key"):
                sd[f"{name}.bias"] = b

    def self_attention_and_mlp(dst: str, src: str) -> None:
        """The parts every encoder and decoder layer shares."""
        norm(f"{dst}.attn_ln", f"{src}/self_attention/layer_norm")
        split([f"{dst}.attn.query", f"{dst}.attn.key", f"{dst}.attn.value"], f"{src}/self_attention/linear_0")
        linear(f"{dst}.attn.out", f"{src}/self_attention/linear_1")
        norm(f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")
        linear(f"{dst}.mlp.0", f"{src}/ffn/linear_0")
        linear(f"{dst}.mlp.2", f"{src}/ffn/linear_1")

    try:
        linear("encoder.conv1", "encoder/conv1")
        linear("encoder.conv2", "encoder/conv2")
        sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
        norm("encoder.ln_post", "encoder/layer_norm")
        for i in range(dims.n_audio_layer):
            self_attention_and_mlp(f"encoder.blocks.{i}", f"encoder/layer_{i}")
        sd["decoder.token_embedding.weight"] = v["decoder/embeddings/weight"]
        sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
        norm("decoder.ln", "decoder/layer_norm")
        for i in range(dims.n_text_layer):
            src, dst = f"decoder/layer_{i}", f"decoder.blocks.{i}"
            self_attention_and_mlp(dst, src)
            norm(f"{dst}.cross_attn_ln", f"{src}/attention/layer_norm")
            linear(f"{dst}.cross_attn.query", f"{src}/attention/linear_0")
            split([f"{dst}.cross_attn.key", f"{dst}.cross_attn.value"], f"{src}/attention/linear_1")
            linear(f"{dst}.cross_attn.out", f"{src}/attention/linear_2")
    except KeyError as e:
        raise ModelFileError(f"{path}: not a Whisper model (missing variable {e.args[0]})") from e
    return dims, sd
