"""Greedy and sampled decoding of independent rows sharing one preallocated KV cache.

Each row has its own prompt (and so its own positions), temperature, timestamp mode and length limit.
Prompts are prefilled together, left-aligned: a shorter row's padding is written at positions it will
overwrite with its own tokens before it ever attends to them. Then every step feeds one token per row
at that row's position. Rows finish independently; a finished row keeps emitting end-of-text, masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from streamer.decoding.rules import LogitRules, RuleState
from streamer.model.whisper import KVCache, Whisper


@dataclass(frozen=True)
class RowRequest:
    tokens: tuple[int, ...]  # the prompt: context, start-of-transcript sequence, forced prefix
    sot_index: int  # where <|startoftranscript|> is in tokens (its logits give the no-speech probability)
    temperature: float = 0.0
    timestamps: bool = True
    sample_len: int = 224  # most tokens to sample


@dataclass
class RowResult:
    tokens: list[int]  # sampled tokens, end-of-text excluded
    sum_logprob: float
    no_speech_prob: float


def sample_tokens(logits: Tensor, temperatures: Tensor) -> Tensor:
    """Per row: argmax at temperature 0, else a draw from softmax(logits / T) (Gumbel-max). (B, V) -> (B,)"""
    hot = temperatures > 0
    scale = torch.where(hot, temperatures, torch.ones_like(temperatures))[:, None]
    gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_(min=1e-20)))
    noisy = logits / scale + torch.where(hot[:, None], gumbel, torch.zeros_like(gumbel))
    return noisy.argmax(dim=-1)


@torch.inference_mode()
def decode_rows(
    model: Whisper, cache: KVCache, rows: list[RowRequest], rules: LogitRules, no_speech: int | None
) -> list[RowResult]:
    """Decode ``rows`` in cache rows 0..len(rows)-1, whose cross-attention K/V are already set."""
    n = len(rows)
    device = cache.self_k.device
    n_ctx = model.dims.n_text_ctx
    lengths = [len(r.tokens) for r in rows]
    if max(lengths) >= n_ctx:
        raise ValueError(f"a prompt of {max(lengths)} tokens leaves no room in the {n_ctx}-token context")
    view = KVCache(cache.self_k[:, :n], cache.self_v[:, :n], cache.cross_k[:, :n], cache.cross_v[:, :n])
    width = max(lengths)
    buffer = torch.zeros(n, n_ctx + 1, dtype=torch.long, device=device)  # (B, S + 1)
    for i, r in enumerate(rows):
        buffer[i, : lengths[i]] = torch.tensor(r.tokens, device=device)
    row_index = torch.arange(n, device=device)
    start = torch.tensor(lengths, device=device)  # (B,) first sampled position per row

    positions = torch.arange(width, device=device).expand(n, width)
    sot = torch.tensor([r.sot_index for r in rows], device=device)
    select = torch.stack([sot, start - 1], dim=1)  # (B, 2)
    prefill = model.decoder(buffer[:, :width], positions, view, kv_len=width, select=select)  # (B, 2, V)
    no_speech_probs = [0.0] * n
    if no_speech is not None:
        no_speech_probs = prefill[:, 0].softmax(dim=-1)[:, no_speech].tolist()
    logits = prefill[:, 1]  # (B, V)

    state = RuleState.new([r.timestamps for r in rows], device)
    temperatures = torch.tensor([r.temperature for r in rows], device=device)
    limit_list = [min(r.sample_len, n_ctx - length) for r, length in zip(rows, lengths, strict=True)]
    limits = torch.tensor(limit_list, device=device)
    sum_logprobs = torch.zeros(n, device=device)
    finished = torch.zeros(n, dtype=torch.bool, device=device)
    eot = rules.eot
    steps = max(limit_list)
    for step in range(steps):
        logits = rules.apply(logits, state)
        logprobs = torch.log_softmax(logits, dim=-1)
        next_tokens = sample_tokens(logits, temperatures)
        picked = logprobs.gather(1, next_tokens[:, None])[:, 0]
        sum_logprobs += torch.where(finished, torch.zeros_like(picked), picked)
        next_tokens = torch.where(finished, torch.full_like(next_tokens, eot), next_tokens)
        position = start + step  # (B,)
        buffer[row_index, position] = next_tokens
        finished |= (next_tokens == eot) | (step + 1 >= limits)
        state.advance(next_tokens, rules.timestamp_begin)
        if step + 1 == steps or bool(finished.all()):
            break
        logits = model.decoder(next_tokens[:, None], position[:, None], view, kv_len=width + step + 1)[:, 0]

    out = buffer.tolist()
    sums = sum_logprobs.tolist()
    results = []
    for i in range(n):
        sampled = out[i][lengths[i] : lengths[i] + limit_list[i]]
        if eot in sampled:
            sampled = sampled[: sampled.index(eot)]
        results.append(RowResult(tokens=sampled, sum_logprob=sums[i], no_speech_prob=no_speech_probs[i]))
    return results
