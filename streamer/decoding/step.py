"""The one-token decode step over static buffers, and its CUDA-graph capture.

``decode_step`` is a pure tensor function of a ``StepBuffers`` (every input and output lives in a tensor
allocated once, updated in place): logit rules, sampling, bookkeeping of finished rows, then the decoder
on the sampled tokens, whose logits are written back for the next step. It reads no tensor value on the
host, so on a GPU it can be captured once (``GraphedStep``) and replayed for every token.

With ``kv_len=None`` the decoder attends over the whole cache (shapes fixed: what a graph needs); on the
CPU the eager loop passes the positions used so far instead, which is cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from streamer.decoding.rules import LogitRules, RuleState
from streamer.model.whisper import KVCache, Whisper

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)  # graph batch sizes; a batch runs in the smallest that holds it


def bucket_for(n: int, max_batch: int) -> int:
    """The smallest bucket that holds ``n`` rows, at most ``max_batch`` (or ``n`` past both)."""
    return min(next((size for size in BUCKETS if size >= n), n), max(max_batch, n))


@dataclass
class StepBuffers:
    """Everything one decode step reads and writes, for a fixed number of rows B."""

    logits: Tensor  # (B, V) float32: the logits the next token is picked from
    tokens: Tensor  # (B, S + 1) long: prompt and sampled tokens; column S catches writes past the end
    start: Tensor  # (B,) long: each row's first sampled position
    step: Tensor  # () long: tokens sampled so far
    temperatures: Tensor  # (B,) float32
    limits: Tensor  # (B,) long: most tokens a row samples
    sum_logprobs: Tensor  # (B,) float32
    finished: Tensor  # (B,) bool
    state: RuleState

    @classmethod
    def new(cls, rows: int, n_vocab: int, n_ctx: int, device: torch.device) -> StepBuffers:
        def longs(*shape: int) -> Tensor:
            return torch.zeros(shape, dtype=torch.long, device=device)

        return cls(
            logits=torch.zeros(rows, n_vocab, device=device),
            tokens=longs(rows, n_ctx + 1),
            start=longs(rows),
            step=longs(),
            temperatures=torch.zeros(rows, device=device),
            limits=longs(rows),
            sum_logprobs=torch.zeros(rows, device=device),
            finished=torch.zeros(rows, dtype=torch.bool, device=device),
            state=RuleState.new([False] * rows, device),
        )

    @property
    def rows(self) -> int:
        return self.logits.shape[0]

    def load(
        self, logits: Tensor, tokens: Tensor, start: Tensor, temperatures: Tensor, limits: Tensor,
        timestamps: Tensor, sampled: Tensor | None = None, sum_logprobs: Tensor | None = None,
    ) -> None:
        """Copy a batch of n <= B rows in; rows n..B-1 are padding, finished from the start. ``sampled``:
        tokens each row has already decoded (accepted from a draft), with their summed log-probability;
        a row with no tokens left to sample (``limits`` <= 0) is finished."""
        n = logits.shape[0]
        self.logits.zero_()
        self.logits[:n] = logits
        self.tokens.zero_()
        self.tokens[:n] = tokens
        self.start.zero_()
        self.start[:n] = start
        self.step.zero_()
        self.temperatures.zero_()
        self.temperatures[:n] = temperatures
        self.limits.fill_(1)
        self.limits[:n] = limits
        self.sum_logprobs.zero_()
        if sum_logprobs is not None:
            self.sum_logprobs[:n] = sum_logprobs
        self.finished.fill_(True)
        self.finished[:n] = limits <= 0
        self.state.reset(timestamps, sampled)


def pick(rules: LogitRules, b: StepBuffers, greedy_text: bool = False, greedy: bool = False) -> Tensor:
    """Pick one token per row from ``b.logits`` and record it; the tokens picked, (B,).

    A finished row keeps emitting end-of-text, which adds nothing to its log-probability; positions
    are clamped to the buffer so steps after every row has finished stay in bounds. ``greedy_text``:
    the caller knows every row is greedy without timestamps, so only their rules run and no noise is
    drawn (the same tokens, cheaper; the streaming steps are captured with it). ``greedy``: every row is
    at temperature 0, so no noise is drawn either (the eager loop only; other captured steps draw it)."""
    n_ctx = b.tokens.shape[1] - 1
    if greedy_text:
        logits = rules.apply_text(b.logits[:, None], (b.state.n_sampled == 0)[:, None])[:, 0]  # (B, V)
        sampled = logits.argmax(dim=-1)
    else:
        logits = rules.apply(b.logits, b.state)  # (B, V)
        sampled = logits.argmax(dim=-1) if greedy else sample_tokens(logits, b.temperatures)  # (B,)
    logprobs = torch.log_softmax(logits, dim=-1)
    picked = logprobs.gather(1, sampled[:, None])[:, 0]  # (B,)
    b.sum_logprobs.add_(torch.where(b.finished, torch.zeros_like(picked), picked))
    next_tokens = torch.where(b.finished, torch.full_like(sampled, rules.eot), sampled)
    position = b.start + b.step  # (B,)
    rows = torch.arange(b.rows, device=position.device)
    b.tokens[rows, position.clamp(max=n_ctx)] = next_tokens
    b.finished.logical_or_((next_tokens == rules.eot) | (b.step + 1 >= b.limits))
    b.state.advance(next_tokens, rules.timestamp_begin)
    return next_tokens


def forward(model: Whisper, cache: KVCache, b: StepBuffers, next_tokens: Tensor, kv_len: int | None) -> None:
    """Run the decoder on the tokens just picked, at their positions, into ``b.logits``; next step."""
    position = (b.start + b.step).clamp(max=model.dims.n_text_ctx - 1)  # (B,)
    b.logits.copy_(model.decoder(next_tokens[:, None], position[:, None], cache, kv_len=kv_len)[:, 0])
    b.step.add_(1)


def decode_step(
    model: Whisper, cache: KVCache, rules: LogitRules, b: StepBuffers, kv_len: int | None, greedy_text: bool = False
) -> None:
    """One whole step, ``pick`` then ``forward``: what a graph captures."""
    forward(model, cache, b, pick(rules, b, greedy_text), kv_len)


def sample_tokens(logits: Tensor, temperatures: Tensor) -> Tensor:
    """Per row: argmax at temperature 0, else a draw from softmax(logits / T) (Gumbel-max). (B, V) -> (B,)"""
    hot = temperatures > 0
    scale = torch.where(hot, temperatures, torch.ones_like(temperatures))[:, None]
    gumbel = -torch.log(-torch.log(torch.rand_like(logits).clamp_(min=1e-20)))
    noisy = logits / scale + torch.where(hot[:, None], gumbel, torch.zeros_like(gumbel))
    return noisy.argmax(dim=-1)


class StaticStep:
    """``decode_step`` on fixed buffers and a fixed cache view, run eagerly: what a graph replays,
    without the capture (the CPU's way to check it, and the benchmark's "static" mode). ``greedy_text``:
    the step for batches of greedy rows without timestamps (streaming), with only their rules."""

    def __init__(
        self, model: Whisper, cache: KVCache, rules: LogitRules, buffers: StepBuffers, greedy_text: bool = False
    ):
        self.model, self.cache, self.rules, self.buffers = model, cache, rules, buffers
        self.greedy_text = greedy_text

    def replay(self) -> None:
        decode_step(self.model, self.cache, self.rules, self.buffers, None, self.greedy_text)


class GraphedStep(StaticStep):
    """``decode_step`` captured once as a CUDA graph and replayed per token.

    The cache view and the buffers are fixed for the graph's life: callers ``load`` the buffers, then
    ``replay``. Warm-up runs on a side stream before capture (as PyTorch requires); it writes only the
    bucket's own cache rows at the first positions, which every decode's prefill overwrites."""

    def __init__(
        self, model: Whisper, cache: KVCache, rules: LogitRules, buffers: StepBuffers, pool: Any,
        greedy_text: bool = False,
    ):  # pool: torch.cuda.graph_pool_handle() (its type differs between torch versions)
        super().__init__(model, cache, rules, buffers, greedy_text)
        self.graph = torch.cuda.CUDAGraph()
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                super().replay()
        torch.cuda.current_stream().wait_stream(side)
        with torch.cuda.graph(self.graph, pool=pool):
            super().replay()

    def replay(self) -> None:
        self.graph.replay()


class StepGraphs:
    """The fixed-shape steps of one engine: one per (bucket, audio length, greedy_text), made on first use
    over the first ``bucket`` rows of the engine's cache; captured as CUDA graphs (one memory pool) if
    ``capture``. The buffers of a bucket are shared by its steps (one batch decodes at a time)."""

    def __init__(self, model: Whisper, cache: KVCache, rules: LogitRules, capture: bool):
        self.model = model
        self.cache = cache
        self.rules = rules
        self.steps: dict[tuple[int, int, bool], StaticStep] = {}
        self.buffers: dict[int, StepBuffers] = {}
        self.pool = torch.cuda.graph_pool_handle() if capture else None

    @property
    def captures(self) -> int:
        """How many steps were made (captured, on a GPU): one per bucket and audio length used."""
        return len(self.steps)

    def get(self, rows: int, n_audio: int, greedy_text: bool = False) -> StaticStep:
        """The step for ``rows`` rows over ``n_audio`` audio positions (made now if it is new).
        Call it before the prefill: capture writes the bucket's cache rows at the first positions."""
        bucket = bucket_for(rows, self.cache.batch_size)
        key = (bucket, n_audio, greedy_text)
        if key not in self.steps:
            c = self.cache
            view = c.view(0, bucket, n_audio)
            dims = self.model.dims
            if bucket not in self.buffers:
                self.buffers[bucket] = StepBuffers.new(bucket, dims.n_vocab, dims.n_text_ctx, c.self_k.device)
            buffers = self.buffers[bucket]
            if self.pool is not None:
                self.steps[key] = GraphedStep(self.model, view, self.rules, buffers, self.pool, greedy_text)
            else:
                self.steps[key] = StaticStep(self.model, view, self.rules, buffers, greedy_text)
        return self.steps[key]
