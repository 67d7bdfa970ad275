"""Greedy and sampled decoding of independent rows sharing one preallocated KV cache.

Each row has its own prompt (and so its own positions), temperature, timestamp mode and length limit.
Prompts are prefilled together, left-aligned: a shorter row's padding is written at positions it will
overwrite with its own tokens before it ever attends to them. Then every step (``decoding.step``) feeds
one token per row at that row's position. Rows finish independently; a finished row keeps emitting
end-of-text, masked.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
    graph = graphs.get(n, cache.cross_k.shape[2]) if graphs is not None else None  # before the prefill
    view = KVCache(cache.self_k[:, :n], cache.self_v[:, :n], cache.cross_k[:, :n], cache.cross_v[:, :n])
    width = max(lengths)
    prompt = torch.zeros(n, n_ctx + 1, dtype=torch.long, device=device)  # (B, S + 1)
    for i, r in enumerate(rows):
        prompt[i, : lengths[i]] = torch.tensor(r.tokens, device=device)
    start = torch.tensor(lengths, device=device)  # (B,) first sampled position per row

    positions = torch.arange(width, device=device).expand(n, width)
    sot = torch.tensor([r.sot_index for r in rows], device=device)
    select = torch.stack([sot, start - 1], dim=1)  # (B, 2)
    prefill = model.decoder(prompt[:, :width], positions, view, kv_len=width, select=select)  # (B, 2, V)
    no_speech_probs = [0.0] * n
    if no_speech is not None:
        no_speech_probs = prefill[:, 0].softmax(dim=-1)[:, no_speech].tolist()

    limit_list = [min(r.sample_len, n_ctx - length) for r, length in zip(rows, lengths, strict=True)]
    b = graph.buffers if graph is not None else StepBuffers.new(n, model.dims.n_vocab, n_ctx, device)
    b.load(
        prefill[:, 1], prompt, start, torch.tensor([r.temperature for r in rows], device=device),
        torch.tensor(limit_list, device=device), torch.tensor([r.timestamps for r in rows], device=device),
    )
    steps = max(limit_list)
    for step in range(steps):
        last = step + 1 == steps
        if graph is not None:
            graph.replay()
            if last or ((step + 1) % check_every == 0 and bool(b.finished[:n].all())):
                break
        else:
            picked = pick(rules, b)
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
