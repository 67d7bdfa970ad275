"""Whisper encoder and decoder, with a preallocated, in-place KV cache.

The decoder never grows a tensor while decoding: self-attention keys and values are written into a
cache allocated once (``n_text_ctx`` positions per row) at explicit position indices, and the
cross-attention keys and values are computed once per encoder output and reused for every token.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from streamer.model.dims import ModelDimensions


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> Tensor:
    """The encoder's fixed sinusoidal position embedding, (length, channels)."""
    assert channels % 2 == 0
    log_timescale_increment = math.log(max_timescale) / (channels // 2 - 1)
    cpu = torch.device("cpu")  # explicit, so building on the meta device stays cheap
    inv_timescales = torch.exp(-log_timescale_increment * torch.arange(channels // 2, device=cpu))
    scaled_time = torch.arange(length, dtype=torch.float32, device=cpu)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(scaled_time), torch.cos(scaled_time)], dim=1)  # (length, channels)


class LayerNorm(nn.LayerNorm):
    """LayerNorm with float32 statistics whatever the model's dtype, as Whisper was trained: PyTorch's
    kernels accumulate half and bfloat16 inputs in float32, so the input is not converted (one kernel
    per norm, which matters in a captured decode step); only weights of another dtype are."""

    def forward(self, x: Tensor) -> Tensor:
        if self.weight.dtype == x.dtype:
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return F.layer_norm(
            x.float(), self.normalized_shape, self.weight.float(), self.bias.float(), self.eps
        ).type(x.dtype)


def _split_heads(x: Tensor, n_head: int) -> Tensor:
    b, t, d = x.shape
    return x.view(b, t, n_head, d // n_head).transpose(1, 2)  # (B, H, T, Dh)


def _merge_heads(x: Tensor) -> Tensor:
    b, h, t, dh = x.shape
    return x.transpose(1, 2).reshape(b, t, h * dh)  # (B, T, D)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)
        # The dtype the attention itself (keys and values kept, the weighted sum) runs in, when it is not
        # the projections': ``Whisper.narrow_encoder_attention``.
        self.attention_dtype: torch.dtype | None = None

    def attend(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """q (B, Tq, D), k and v (B, Tk, D), mask (B, 1, Tq, Tk) bool -> (B, Tq, D)."""
        return self.attend_heads(q, _split_heads(k, self.n_head), _split_heads(v, self.n_head), mask)

    def attend_heads(self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """As ``attend``, with k and v already split into heads, (B, H, Tk, Dh) each."""
        dtype = q.dtype
        q = self.narrow(_split_heads(q, self.n_head))  # (B, H, Tq, Dh)
        out = F.scaled_dot_product_attention(q, self.narrow(k), self.narrow(v), attn_mask=mask)  # (B, H, Tq, Dh)
        return self.out(_merge_heads(out).to(dtype))

    def narrow(self, x: Tensor) -> Tensor:
        """x in the attention's dtype (the same tensor when it is already)."""
        return x if self.attention_dtype is None else x.to(self.attention_dtype)


class MLP(nn.Sequential):
    def __init__(self, n_state: int):
        super().__init__(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))


class EncoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = MLP(n_state)
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: Tensor, after: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """x (B, T, D) -> (B, T, D); ``after``: keys and values (B, H, T', Dh) of positions after x's,
        which x's positions attend to as well (they are not computed)."""
        return self.forward_kv(x, after)[0]

    def forward_kv(self, x: Tensor, after: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """As ``forward``, also returning x's own keys and values, (B, H, T, Dh) each."""
        h = self.attn_ln(x)
        k = self.attn.narrow(_split_heads(self.attn.key(h), self.attn.n_head))  # (B, H, T, Dh)
        v = self.attn.narrow(_split_heads(self.attn.value(h), self.attn.n_head))
        keys, values = (k, v) if after is None else (torch.cat([k, after[0]], 2), torch.cat([v, after[1]], 2))
        x = x + self.attn.attend_heads(self.attn.query(h), keys, values)
        return x + self.mlp(self.mlp_ln(x)), k, v


@dataclass(frozen=True)
class Silence:
    """The encoder over a window of silence (log-mel frames all at one level): each block's keys and
    values, (1, H, T, Dh), and the output features, (1, T, D), T = n_audio_ctx. A window whose audio
    ends early takes the positions after it from here (``AudioEncoder.forward``'s ``heard``)."""

    keys: tuple[Tensor, ...]
    values: tuple[Tensor, ...]
    features: Tensor


class AudioEncoder(nn.Module):
    positional_embedding: Tensor

    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.conv1 = nn.Conv1d(dims.n_mels, dims.n_audio_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dims.n_audio_state, dims.n_audio_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, dims.n_audio_state))
        self.blocks = nn.ModuleList(
            EncoderBlock(dims.n_audio_state, dims.n_audio_head) for _ in range(dims.n_audio_layer)
        )
        self.ln_post = LayerNorm(dims.n_audio_state)

    def forward(self, mel: Tensor, heard: int | None = None, silence: Silence | None = None) -> Tensor:
        """mel (B, n_mels, 2 * T) -> audio features (B, T, D), T <= n_audio_ctx (shorter = audio_ctx).

        With ``heard`` and a ``silence`` (T = n_audio_ctx), only the first ``heard`` positions are
        computed; they attend to the silence's keys and values for the positions after them, which take
        the silence's features. A window of a few seconds of speech costs a fraction of the 30 s
        (attention is quadratic in T), and tiny.en decodes it no worse: bench/replay.py.
        """
        if heard is not None and silence is not None:
            return self._forward_heard(mel, heard, silence)
        x = self._embed(mel)
        for block in cast(list[EncoderBlock], self.blocks):
            x = block(x)
        return self.ln_post(x)

    def _embed(self, mel: Tensor) -> Tensor:
        """mel (B, n_mels, 2T) -> the first block's input (B, T, D)."""
        x = F.gelu(self.conv1(mel))  # (B, D, 2T)
        x = F.gelu(self.conv2(x))  # (B, D, T)
        x = x.permute(0, 2, 1)  # (B, T, D)
        n_frames = x.shape[1]
        if n_frames > self.positional_embedding.shape[0]:
            raise ValueError(f"audio of {n_frames} frames is longer than the encoder's context")
        return x + self.positional_embedding[:n_frames].to(x.dtype)

    def _forward_heard(self, mel: Tensor, heard: int, silence: Silence) -> Tensor:
        b = mel.shape[0]
        # conv2's output position t reads mel frames up to 2t + 2: the first 2 * heard + 2 frames suffice
        x = self._embed(mel[:, :, : 2 * heard + 2])[:, :heard]  # (B, heard, D)
        for k, v, block in zip(silence.keys, silence.values, cast(list[EncoderBlock], self.blocks), strict=True):
            after_k = k[:, :, heard:].expand(b, -1, -1, -1)  # (B, H, T - heard, Dh), not copied
            x = block(x, (after_k, v[:, :, heard:].expand(b, -1, -1, -1)))
        after_x = silence.features[:, heard:].expand(b, -1, -1)  # (B, T - heard, D)
        return torch.cat([self.ln_post(x), after_x], dim=1)  # (B, T, D)

    def silence(self, level: float) -> Silence:
        """The states of a 30 s window of log-mel frames all equal to ``level`` (silence after the clamp)."""
        weight = self.conv1.weight
        mel = torch.full((1, weight.shape[1], 2 * self.positional_embedding.shape[0]), level,
                         dtype=weight.dtype, device=weight.device)  # (1, n_mels, 2T)
        x = self._embed(mel)
        keys, values = [], []
        for block in cast(list[EncoderBlock], self.blocks):
            x, k, v = block.forward_kv(x)
            keys.append(k)
            values.append(v)
        return Silence(tuple(keys), tuple(values), self.ln_post(x))


@dataclass
class KVCache:
    """Decoder state for a fixed number of rows, allocated once and written in place.

    self_k/self_v: (L, B, n_text_ctx, D), written at token positions.
    cross_k/cross_v: (L, B, H, n_audio, Dh), written once per encoder output, each head's keys contiguous
    (a decode step reads them all: split from (B, n_audio, D) rows on every step, the cross-attention of
    a step took twice as long on the CPU, 3.6 against 1.9 ms for tiny.en's four layers).
    audio_valid: (B, n_audio) bool, which audio positions each row attends to (a row's encoder output
    may be shorter than the others': the rest is padding, masked out of cross-attention).
    """

    self_k: Tensor
    self_v: Tensor
    cross_k: Tensor
    cross_v: Tensor
    audio_valid: Tensor

    @property
    def batch_size(self) -> int:
        return self.self_k.shape[1]

    @property
    def n_audio(self) -> int:
        return self.cross_k.shape[3]

    def view(self, lo: int, hi: int, n_audio: int | None = None) -> KVCache:
        """Rows lo..hi-1 (and the first ``n_audio`` audio positions), sharing this cache's memory."""
        a = slice(None) if n_audio is None else slice(0, n_audio)
        return KVCache(
            self.self_k[:, lo:hi], self.self_v[:, lo:hi], self.cross_k[:, lo:hi, :, a], self.cross_v[:, lo:hi, :, a],
            self.audio_valid[lo:hi, a],
        )

    def hearing(self, n: int) -> KVCache:
        """These rows, in ``n`` groups of consecutive rows that each hear one window: the cross-attention
        K/V of rows 0..n-1 serve the groups (``DecoderBlock.forward``)."""
        return KVCache(self.self_k, self.self_v, self.cross_k[:, :n], self.cross_v[:, :n], self.audio_valid[:n])

    def leaders(self, group: int) -> KVCache:
        """The first row of every group of ``group`` consecutive rows (a strided view of the self-attention
        state), each hearing its group's window: a beam search's prefill runs once per window in these
        rows, and ``reorder`` then gives its state to the other rows of the group."""
        n = self.batch_size // group
        return KVCache(self.self_k[:, ::group], self.self_v[:, ::group], self.cross_k[:, :n], self.cross_v[:, :n],
                       self.audio_valid[:n])

    def cross_mask(self) -> Tensor:
        """The cross-attention mask, (B, 1, 1, n_audio)."""
        return self.audio_valid[:, None, None, :]

    def reorder(self, index: Tensor, length: int) -> None:
        """Rows take the self-attention state (the first ``length`` positions) of rows ``index``, in place
        (beam search: the rows that trade state attend to the same audio, so their cross-attention K/V
        are equal already and are not copied: 46 MB a step for five rows of a 30 s window of tiny.en)."""
        for t in (self.self_k, self.self_v):
            t[:, :, :length] = t[:, :, :length].index_select(1, index)  # (L, B, length, D)


class DecoderBlock(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.cross_attn = MultiHeadAttention(n_state, n_head)
        self.cross_attn_ln = LayerNorm(n_state)
        self.mlp = MLP(n_state)
        self.mlp_ln = LayerNorm(n_state)

    def _self_attend(
        self, x: Tensor, positions: Tensor, self_mask: Tensor, k_cache: Tensor, v_cache: Tensor, kv_len: int
    ) -> Tensor:
        h = self.attn_ln(x)
        index = positions.unsqueeze(-1).expand(-1, -1, h.shape[-1])  # (B, T, D)
        k_cache.scatter_(1, index, self.attn.key(h))
        v_cache.scatter_(1, index, self.attn.value(h))
        return x + self.attn.attend(self.attn.query(h), k_cache[:, :kv_len], v_cache[:, :kv_len], self_mask)

    def forward(
        self,
        x: Tensor,
        positions: Tensor,
        self_mask: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        cross_mask: Tensor,
        kv_len: int,
    ) -> Tensor:
        """x (B, T, D); positions (B, T); self_mask (B, 1, T, kv_len); caches (B, S, D), (B, H, Ta, Dh);
        cross_mask (B, 1, 1, Ta). The cross K/V and mask may have N < B rows, one per group of B / N
        consecutive rows that hear the same window (a beam search's beams, a window's samples): each
        window's K/V are then read once for the queries of its whole group."""
        x = self._self_attend(x, positions, self_mask, k_cache, v_cache, kv_len)
        h = self.cross_attn_ln(x)
        q = self.cross_attn.query(h)  # (B, T, D)
        b, t, d = q.shape
        n = cross_k.shape[0]
        heard = self.cross_attn.attend_heads(q.reshape(n, b // n * t, d), cross_k, cross_v, cross_mask)  # (N, B/N*T, D)
        x = x + heard.reshape(b, t, d)  # (B, T, D)
        return x + self.mlp(self.mlp_ln(x))

    def forward_with_cross_qk(
        self,
        x: Tensor,
        positions: Tensor,
        self_mask: Tensor,
        k_cache: Tensor,
        v_cache: Tensor,
        cross_k: Tensor,
        cross_v: Tensor,
        cross_mask: Tensor,
        kv_len: int,
    ) -> tuple[Tensor, Tensor]:
        """As ``forward``, also returning the cross-attention logits (B, H, T, Ta) for word alignment
        (-inf at masked audio positions)."""
        x = self._self_attend(x, positions, self_mask, k_cache, v_cache, kv_len)
        h = self.cross_attn_ln(x)
        n_head = self.cross_attn.n_head
        q = _split_heads(self.cross_attn.query(h), n_head)  # (B, H, T, Dh)
        k, v = cross_k, cross_v  # (B, H, Ta, Dh)
        qk = (q @ k.transpose(-1, -2)).float() / math.sqrt(q.shape[-1])  # (B, H, T, Ta)
        qk = qk.masked_fill(~cross_mask, float("-inf"))
        out = qk.softmax(dim=-1).to(v.dtype) @ v  # (B, H, T, Dh)
        x = x + self.cross_attn.out(_merge_heads(out))
        return x + self.mlp(self.mlp_ln(x)), qk


class TextDecoder(nn.Module):
    def __init__(self, dims: ModelDimensions):
        super().__init__()
        self.dims = dims
        # Embedding's own random init, on the meta device (where loading builds the model), imports
        # torch._dynamo: 1.8 s of a CLI start. So the table is made here, and drawn only off the meta device.
        table = torch.empty(dims.n_vocab, dims.n_text_state)  # (V, D)
        if not table.is_meta:
            nn.init.normal_(table)
        self.token_embedding = nn.Embedding(dims.n_vocab, dims.n_text_state, _weight=table)
        self.positional_embedding = nn.Parameter(torch.zeros(dims.n_text_ctx, dims.n_text_state))
        self.blocks = nn.ModuleList(
            DecoderBlock(dims.n_text_state, dims.n_text_head) for _ in range(dims.n_text_layer)
        )
        self.ln = LayerNorm(dims.n_text_state)
        # Tied output projection; an int8 copy of the table once quantize_int8 has run (CPU).
        self.projection: nn.Module | None = None

    def new_cache(self, batch_size: int, n_audio: int | None = None, windows: int | None = None) -> KVCache:
        """A cache of ``batch_size`` rows; with ``windows``, that many groups of consecutive rows that each
        hear one window (cross-attention K/V for ``windows`` rows only: ``KVCache.hearing``)."""
        dims = self.dims
        w = self.positional_embedding  # the decoder's dtype (the token table may be narrower: int8 on the CPU)
        n_audio = dims.n_audio_ctx if n_audio is None else n_audio
        n_windows = batch_size if windows is None else windows
        shape_self = (dims.n_text_layer, batch_size, dims.n_text_ctx, dims.n_text_state)
        head_dim = dims.n_text_state // dims.n_text_head
        shape_cross = (dims.n_text_layer, n_windows, dims.n_text_head, n_audio, head_dim)
        return KVCache(
            self_k=torch.zeros(shape_self, dtype=w.dtype, device=w.device),
            self_v=torch.zeros(shape_self, dtype=w.dtype, device=w.device),
            cross_k=torch.zeros(shape_cross, dtype=w.dtype, device=w.device),
            cross_v=torch.zeros(shape_cross, dtype=w.dtype, device=w.device),
            audio_valid=torch.ones((n_windows, n_audio), dtype=torch.bool, device=w.device),
        )

    def _layer_cross_kv(self, block: DecoderBlock, audio_features: Tensor) -> tuple[Tensor, Tensor]:
        """One layer's cross-attention keys and values of audio_features (B, Ta, D): (B, H, Ta, Dh) each."""
        n_head = self.dims.n_text_head
        return (_split_heads(block.cross_attn.key(audio_features), n_head),
                _split_heads(block.cross_attn.value(audio_features), n_head))

    def cross_kv(self, audio_features: Tensor) -> tuple[Tensor, Tensor]:
        """Every layer's cross-attention keys and values of audio_features (B, Ta, D): (L, B, H, Ta, Dh)
        each (``set_audio``'s ``after``, made once for the features of a window of silence)."""
        layers = [self._layer_cross_kv(block, audio_features) for block in cast(list[DecoderBlock], self.blocks)]
        return torch.stack([k for k, _ in layers]), torch.stack([v for _, v in layers])

    def set_audio(
        self, audio_features: Tensor, cache: KVCache, lengths: Tensor | None = None, heard: int | None = None,
        after: tuple[Tensor, Tensor] | None = None,
    ) -> None:
        """Compute cross-attention K/V of audio_features (B, Ta, D) once, into the cache's rows.
        ``lengths`` (B,): each row's own number of audio positions (the rest is padding); all if None.

        With ``heard`` and ``after`` (``cross_kv`` of features that every row has from position ``heard``
        on, (L, 1, H, Ta, Dh) each: a window of silence's), only the first ``heard`` positions are
        computed and the rest copied from ``after``: a window whose encoder computed its first seconds
        only (``AudioEncoder.forward``'s ``heard``) costs a fraction of the 30 s here too."""
        n_audio = audio_features.shape[1]
        positions = torch.arange(cache.audio_valid.shape[1], device=audio_features.device)
        full = n_audio if lengths is None else lengths
        valid = positions[None, :] < torch.as_tensor(full, device=audio_features.device).reshape(-1, 1)
        cache.audio_valid.copy_(valid.expand(audio_features.shape[0], -1))  # (B, Ta)
        if heard is None or after is None or heard >= n_audio:
            heard = n_audio
        else:
            tail = slice(heard, n_audio)
            cache.cross_k[:, :, :, tail] = after[0][:, :, :, tail]  # (L, B, H, Ta - heard, Dh), broadcast
            cache.cross_v[:, :, :, tail] = after[1][:, :, :, tail]
        head = audio_features[:, :heard]  # (B, heard, D)
        for i, block in enumerate(cast(list[DecoderBlock], self.blocks)):
            cache.cross_k[i, :, :, :heard], cache.cross_v[i, :, :, :heard] = self._layer_cross_kv(block, head)

    def _embed(self, tokens: Tensor, positions: Tensor, kv_len: int) -> tuple[Tensor, Tensor]:
        pos = self.positional_embedding[positions]  # (B, T, D)
        x = self.token_embedding(tokens).to(pos.dtype) + pos  # (B, T, D)
        key_pos = torch.arange(kv_len, device=tokens.device)
        self_mask = (key_pos[None, None, :] <= positions[:, :, None]).unsqueeze(1)  # (B, 1, T, kv_len)
        return x, self_mask

    def _logits(self, x: Tensor) -> Tensor:
        x = self.ln(x)
        if self.projection is not None:
            return self.projection(x).float()  # (B, T, V)
        return (x @ self.token_embedding.weight.to(x.dtype).T).float()  # (B, T, V)

    def forward(
        self, tokens: Tensor, positions: Tensor, cache: KVCache, kv_len: int | None = None,
        select: Tensor | None = None,
    ) -> Tensor:
        """tokens, positions (B, T) -> logits (B, T, V), float32; with ``select`` (B, K), only (B, K, V).

        Writes this step's keys/values into ``cache`` at ``positions`` and attends, per row, to every
        cached position <= its own. ``kv_len`` bounds the positions looked at (all of them if None, the
        shape-static form used for graph capture); it must exceed every position. ``select`` picks the
        positions per row to project to the vocabulary, which is most of a prefill's cost otherwise.
        """
        kv_len = self.dims.n_text_ctx if kv_len is None else kv_len
        x, self_mask = self._embed(tokens, positions, kv_len)
        cross_mask = cache.cross_mask()
        for i, block in enumerate(self.blocks):
            x = block(
                x, positions, self_mask, cache.self_k[i], cache.self_v[i], cache.cross_k[i], cache.cross_v[i],
                cross_mask, kv_len,
            )
        if select is not None:
            x = x[torch.arange(x.shape[0], device=x.device)[:, None], select]  # (B, K, D)
        return self._logits(x)

    def forward_with_cross_qk(
        self, tokens: Tensor, positions: Tensor, cache: KVCache, kv_len: int, heads: Sequence[tuple[int, int]],
        select: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """As ``forward``, but returning the hidden states (B, T, D) (or (B, K, D) with ``select``) for
        ``token_logprobs`` rather than logits, and the cross-attention logits of the (layer, head) pairs
        ``heads``, (B, len(heads), T, Ta) (only those are kept: all heads of all layers would be
        tens of MB for a long text)."""
        x, self_mask = self._embed(tokens, positions, kv_len)
        kept: dict[tuple[int, int], Tensor] = {}
        cross_mask = cache.cross_mask()
        for i, block in enumerate(cast(list[DecoderBlock], self.blocks)):
            x, qk = block.forward_with_cross_qk(
                x, positions, self_mask, cache.self_k[i], cache.self_v[i], cache.cross_k[i], cache.cross_v[i],
                cross_mask, kv_len,
            )  # qk (B, H, T, Ta)
            for layer, head in heads:
                if layer == i:
                    kept[layer, head] = qk[:, head].clone()  # (B, T, Ta): a copy, so the layer's qk is freed
        if select is not None:
            x = x[torch.arange(x.shape[0], device=x.device)[:, None], select]  # (B, K, D)
        return x, torch.stack([kept[pair] for pair in heads], dim=1)  # (B, Hs, T, Ta)

    def token_logprobs(self, x: Tensor, targets: Tensor, chunk: int = 16) -> Tensor:
        """Hidden states x (B, K, D) -> the log-probability of ``targets`` (B, K) at each position,
        projected ``chunk`` positions at a time: a long text's (B, K, V) logits and their log-softmax
        would take over 100 MB at once."""
        out = torch.empty(targets.shape, dtype=torch.float32, device=x.device)  # (B, K)
        for lo in range(0, x.shape[1], chunk):
            logits = self._logits(x[:, lo : lo + chunk])  # (B, k, V)
            target = logits.gather(2, targets[:, lo : lo + chunk, None])[:, :, 0]  # (B, k)
            out[:, lo : lo + chunk] = target - logits.logsumexp(dim=-1)
        return out


class Whisper(nn.Module):
    def __init__(self, dims: ModelDimensions, alignment_heads: list[tuple[int, int]] | None = None):
        super().__init__()
        self.dims = dims
        self.encoder = AudioEncoder(dims)
        self.decoder = TextDecoder(dims)
        if alignment_heads is None:
            # Without a list from the checkpoint, use every head of the last half of the layers.
            alignment_heads = [
                (layer, head)
                for layer in range(dims.n_text_layer // 2, dims.n_text_layer)
                for head in range(dims.n_text_head)
            ]
        self.alignment_heads = alignment_heads

    @property
    def device(self) -> torch.device:
        return self.decoder.token_embedding.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.positional_embedding.dtype

    def narrow_encoder_attention(self, dtype: torch.dtype) -> None:
        """Run the encoder's attention in ``dtype``, its keys and values kept in it (a window of silence's
        too: call it before ``AudioEncoder.silence``); the projections keep their own dtype. The decoder
        is left as it is: its cross-attention in bfloat16 saved ~5% of a decode step on the CPU, and its
        hypotheses then flipped more between re-decodes (bench/replay.py: a contested opening held a
        sentence 3-6 s, committed p90 1.92 s against 1.52 s)."""
        for block in cast(list[EncoderBlock], self.encoder.blocks):
            block.attn.attention_dtype = dtype

    @property
    def is_multilingual(self) -> bool:
        return self.dims.is_multilingual
