"""Greedy and sampled decoding of independent rows sharing one preallocated KV cache.

Each row has its own prompt (and so its own positions), temperature, timestamp mode and length limit.
Prompts are prefilled together, left-aligned: a shorter row's padding is written at positions it will
overwrite with its own tokens before it ever attends to them. Then every step (``decoding.step``) feeds
one token per row at that row's position. Rows finish independently; a finished row keeps emitting
end-of-text, masked.

A greedy row may bring a ``draft``: tokens it expects to decode (a stream's previous hypothesis). The
draft is prefilled with the prompt, and the longest part of it that greedy decoding would have picked
token by token is accepted in that one pass (prompt-lookup speculative decoding: the result is the
greedy result, found with one decoder pass instead of one per token); steps go on from the first token
the model picks differently.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from streamer.decoding.rules import LogitRules
from streamer.decoding.step import StepBuffers, StepGraphs, forward, pick
from streamer.model.whisper import KVCache, Whisper


@dataclass(frozen=True)
class RowRequest:
    tokens: tuple[int, ...]  # the prompt: context, start-of-transcript sequence, forced prefix
    sot_index: int  # where <|startoftranscript|> is in tokens (its logits give the no-speech probability)
    temperature: float = 0.0
    timestamps: bool = True
    sample_len: int = 224  # most tokens to sample
    draft: tuple[int, ...] = ()  # text tokens expected next (greedy rows without timestamps only)


@dataclass
class RowResult:
    tokens: list[int]  # sampled tokens, end-of-text excluded
    sum_logprob: float
    no_speech_prob: float


@torch.inference_mode()
def decode_rows(
    model: Whisper, cache: KVCache, rows: list[RowRequest], rules: LogitRules, no_speech: int | None,
    graphs: StepGraphs | None = None, check_every: int = 4,
) -> list[RowResult]:
    """Decode ``rows`` in cache rows 0..len(rows)-1, whose cross-attention K/V are already set.

    With ``graphs`` every step after the prefill is a replay of the bucket's fixed-shape step (a CUDA
    graph on a GPU), and the host reads the finished flags only every ``check_every`` steps; without,
    steps run eagerly, attending only to the positions used so far, and stop as soon as every row is done."""
    n = len(rows)
    device = cache.self_k.device
    n_ctx = model.dims.n_text_ctx
    lengths = [len(r.tokens) for r in rows]
    if max(lengths) >= n_ctx:
        raise ValueError(f"a prompt of {max(lengths)} tokens leaves no room in the {n_ctx}-token context")
    limit_list = [min(r.sample_len, n_ctx - length) for r, length in zip(rows, lengths, strict=True)]
    drafts = [
        r.draft[: max(0, limit - 1)] if r.temperature == 0 and not r.timestamps else ()
        for r, limit in zip(rows, limit_list, strict=True)
    ]
    greedy = all(r.temperature == 0 for r in rows)
    greedy_text = greedy and not any(r.timestamps for r in rows)
    graph = graphs.get(n, cache.n_audio, greedy_text) if graphs is not None else None  # before the prefill
    view = cache.view(0, n)
    width = max(length + len(d) for length, d in zip(lengths, drafts, strict=True))
    n_draft = max(len(d) for d in drafts)
    host = np.zeros((n, n_ctx + 1), dtype=np.int64)  # built on the host, copied once
    for i, (r, d) in enumerate(zip(rows, drafts, strict=True)):
        host[i, : lengths[i] + len(d)] = r.tokens + d
    prompt = torch.from_numpy(host).to(device)  # (B, S + 1)
    start = torch.tensor(lengths, device=device)  # (B,) first sampled position per row

    positions = torch.arange(width, device=device).expand(n, width)
    sot = torch.tensor([r.sot_index for r in rows], device=device)
    # Logits at start-of-transcript (no-speech), then predicting the first sampled token and each after
    # a draft token: (B, 2 + n_draft) positions, clamped into the row for rows with shorter drafts.
    picks = (start - 1)[:, None] + torch.arange(n_draft + 1, device=device)[None, :]  # (B, 1 + n_draft)
    select = torch.cat([sot[:, None], picks.clamp(max=width - 1)], dim=1)
    prefill = model.decoder(prompt[:, :width], positions, view, kv_len=width, select=select)  # (B, K, V)
    no_speech_probs = [0.0] * n
    if no_speech is not None:
        no_speech_probs = prefill[:, 0].softmax(dim=-1)[:, no_speech].tolist()

    logits = prefill[:, 1]
    accepted = torch.zeros(n, dtype=torch.long, device=device)
    accepted_logprob = torch.zeros(n, device=device)
    if n_draft:
        logits, accepted, accepted_logprob = _accept_drafts(rules, prefill[:, 1:], prompt, start, drafts)
    b = graph.buffers if graph is not None else StepBuffers.new(n, model.dims.n_vocab, n_ctx, device)
    b.load(
        logits, prompt, start + accepted, torch.tensor([r.temperature for r in rows], device=device),
        torch.tensor(limit_list, device=device) - accepted,
        torch.tensor([r.timestamps for r in rows], device=device), sampled=accepted, sum_logprobs=accepted_logprob,
    )
    steps = max(limit_list)
    for step in range(steps):
        last = step + 1 == steps
        if graph is not None:
            graph.replay()
            if last or ((step + 1) % check_every == 0 and bool(b.finished[:n].all())):
                break
        else:
            picked = pick(rules, b, greedy_text, greedy)
            if last or bool(b.finished.all()):
                break
            forward(model, view, b, picked, kv_len=width + step + 1)

    out = b.tokens[:n].tolist()
    sums = b.sum_logprobs[:n].tolist()
    results = []
    for i in range(n):
        sampled = out[i][lengths[i] : lengths[i] + limit_list[i]]
        if rules.eot in sampled:
            sampled = sampled[: sampled.index(rules.eot)]
        results.append(RowResult(tokens=sampled, sum_logprob=sums[i], no_speech_prob=no_speech_probs[i]))
    return results


def _accept_drafts(
    rules: LogitRules, logits: Tensor, prompt: Tensor, start: Tensor, drafts: list[tuple[int, ...]]
) -> tuple[Tensor, Tensor, Tensor]:
    """The greedy check of each row's draft against the logits the prefill gave after each of its tokens.

    logits (B, 1 + D, V): column j predicts the token after j draft tokens. Returns the logits to pick
    the next token from (B, V), the number of draft tokens accepted (B,) and their summed log-probability
    (B,). Only rows without timestamp rules have drafts: their rules are the suppressed tokens, and blanks
    at the first token."""
    n, k, _ = logits.shape
    device = logits.device
    lengths = torch.tensor([len(d) for d in drafts], device=device)  # (B,)
    filtered = rules.apply_text(logits)  # (B, K, V)
    greedy = filtered.argmax(dim=-1)  # (B, K): what greedy decoding picks after j draft tokens
    columns = torch.arange(k - 1, device=device)[None, :]  # (1, D)
    proposed = prompt.gather(1, start[:, None] + columns)  # (B, D): the draft tokens
    agree = (greedy[:, :-1] == proposed) & (columns < lengths[:, None])  # (B, D)
    accepted = agree.long().cumprod(dim=1).sum(dim=1)  # (B,) leading draft tokens greedy would pick
    logprobs = torch.log_softmax(filtered[:, :-1], dim=-1).gather(2, proposed[:, :, None])[:, :, 0]  # (B, D)
    kept = columns < accepted[:, None]
    accepted_logprob = torch.where(kept, logprobs, torch.zeros_like(logprobs)).sum(dim=1)
    rows = torch.arange(n, device=device)
    return logits[rows, accepted], accepted, accepted_logprob
