"""Whisper's logit rules as pure tensor operations over a batch of rows.

Suppress-blank, the suppress-token list and the timestamp rules (no <|notimestamps|>, timestamps in
pairs, never decreasing, an initial timestamp first and at most ``max_initial_timestamp`` in, and a
timestamp forced when their total probability beats every text token) are evaluated per row from a
small state of tensors, with no host synchronisation: the step can run inside a captured graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from streamer.mel import TIME_PER_TOKEN
from streamer.tokenizer import Tokenizer


@dataclass
class RuleState:
    """Per-row decoding state the rules read, (B,) each; updated in place by ``advance``."""

    n_sampled: Tensor  # tokens sampled so far (after the prompt and prefix)
    last: Tensor  # last sampled token, -1 if none
    penultimate: Tensor  # the one before it, -1 if none
    last_timestamp: Tensor  # last sampled timestamp token, -1 if none
    timestamps: Tensor  # bool: this row predicts timestamps (the timestamp rules apply to it)

    @classmethod
    def new(cls, timestamps: list[bool], device: torch.device) -> RuleState:
        def full(v: int) -> Tensor:
            return torch.full((len(timestamps),), v, dtype=torch.long, device=device)

        return cls(full(0), full(-1), full(-1), full(-1), torch.tensor(timestamps, dtype=torch.bool, device=device))

    def reset(self, timestamps: Tensor, sampled: Tensor | None = None) -> None:
        """Back to nothing sampled (or ``sampled`` tokens per row: rows without timestamps only), in place;
        rows past ``len(timestamps)`` get no timestamp rules."""
        self.n_sampled.zero_()
        if sampled is not None:
            self.n_sampled[: len(sampled)] = sampled
        for t in (self.last, self.penultimate, self.last_timestamp):
            t.fill_(-1)
        self.timestamps.zero_()
        self.timestamps[: len(timestamps)] = timestamps

    def advance(self, tokens: Tensor, timestamp_begin: int) -> None:
        """Record one sampled token per row."""
        self.penultimate.copy_(self.last)
        self.last.copy_(tokens)
        self.n_sampled.add_(1)
        self.last_timestamp.copy_(torch.where(tokens >= timestamp_begin, tokens, self.last_timestamp))

    def reorder(self, index: Tensor) -> None:
        for t in (self.n_sampled, self.last, self.penultimate, self.last_timestamp, self.timestamps):
            t.copy_(t.index_select(0, index))


class LogitRules:
    """The logit filters of one decoding configuration, precomputed as masks over the vocabulary."""

    def __init__(
        self,
        tokenizer: Tokenizer,
        n_vocab: int,
        device: torch.device,
        suppress_tokens: list[int],
        suppress_blank: bool = True,
        max_initial_timestamp: float | None = 1.0,
    ):
        self.eot = tokenizer.eot
        self.timestamp_begin = tokenizer.timestamp_begin
        self.no_timestamps = tokenizer.no_timestamps
        self.vocab = torch.arange(n_vocab, device=device)  # (V,)
        suppress = torch.zeros(n_vocab, dtype=torch.bool, device=device)
        suppress[[t for t in suppress_tokens if 0 <= t < n_vocab]] = True
        self.suppress = suppress  # (V,)
        blank = torch.zeros(n_vocab, dtype=torch.bool, device=device)
        if suppress_blank:
            blank[tokenizer.encode(" ") + [tokenizer.eot]] = True
        self.blank = blank  # (V,)
        self.is_timestamp = self.vocab >= self.timestamp_begin  # (V,)
        self.is_text = self.vocab < self.eot  # (V,)
        self.max_initial = (
            self.timestamp_begin + round(max_initial_timestamp / TIME_PER_TOKEN)
            if max_initial_timestamp is not None
            else n_vocab
        )
        # Constant parts of the rules, so that a step runs fewer vocabulary-wide operations.
        self.is_no_timestamps = self.vocab == self.no_timestamps  # (V,)
        self.not_first = ~self.is_timestamp | (self.vocab > self.max_initial)  # (V,): never a first token

    def apply_text(self, logits: Tensor, first: Tensor | None = None) -> Tensor:
        """The rules of rows without timestamps: logits (B, K, V) -> filtered (B, K, V). ``first`` (B, K)
        says which positions pick a row's first token (blanks are suppressed there only); by default
        position k follows k sampled tokens, so only position 0 does."""
        if first is None:
            first = torch.zeros(logits.shape[:2], dtype=torch.bool, device=logits.device)
            first[:, 0] = True
        mask = self.suppress[None, None, :] | (first[:, :, None] & self.blank[None, None, :])  # (B, K, V)
        return logits.masked_fill(mask, float("-inf"))

    def apply(self, logits: Tensor, state: RuleState) -> Tensor:
        """logits (B, V) float32 -> filtered logits (B, V), -inf where a rule forbids a token."""
        first = (state.n_sampled == 0)[:, None]  # (B, 1)
        ts_rows = state.timestamps[:, None]  # (B, 1)
        mask = self.suppress[None, :] | (first & self.blank[None, :])  # (B, V)
        # Rows with timestamps never emit <|notimestamps|>.
        mask = mask | (ts_rows & self.is_no_timestamps[None, :])
        last_ts = (state.n_sampled >= 1) & (state.last >= self.timestamp_begin)
        penult_ts = (state.n_sampled < 2) | (state.penultimate >= self.timestamp_begin)
        # Timestamps come in pairs, except right before the end of text.
        rule = ((last_ts & penult_ts)[:, None] & self.is_timestamp[None, :]) | (
            (last_ts & ~penult_ts)[:, None] & self.is_text[None, :]
        )
        # Timestamps never decrease, and a segment has a non-zero length.
        floor = torch.where(last_ts & ~penult_ts, state.last_timestamp, state.last_timestamp + 1)
        seen = (state.last_timestamp >= 0)[:, None]
        rule = rule | (seen & self.is_timestamp[None, :] & (self.vocab[None, :] < floor[:, None]))
        # The first sampled token is a timestamp, at most max_initial_timestamp in.
        rule = rule | (first & self.not_first[None, :])
        logits = logits.masked_fill(mask | (ts_rows & rule), float("-inf"))
        # Force a timestamp when their summed probability beats every single text token.
        logprobs = torch.log_softmax(logits, dim=-1)
        ts_logprob = torch.logsumexp(logprobs[:, self.timestamp_begin :], dim=-1)
        text_max = logprobs[:, : self.timestamp_begin].max(dim=-1).values
        force = (state.timestamps & (ts_logprob > text_max))[:, None] & ~self.is_timestamp[None, :]
        return logits.masked_fill(force, float("-inf"))
