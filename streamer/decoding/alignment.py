"""Word timestamps from the cross-attention of the model's alignment heads (median filter + DTW).

The text is fed once more through the decoder, after the start-of-transcript sequence; the alignment
heads' attention over the audio frames, normalised per frame and smoothed in time, is a cost matrix
through which dynamic time warping finds a monotonic token-to-frame path. A word starts where the path
reaches its first token's row and ends where it reaches the next word's. Each word's probability is
the mean of its tokens' probabilities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from streamer.mel import HOP_LENGTH, TIME_PER_TOKEN
from streamer.model.whisper import KVCache, Whisper
from streamer.tokenizer import Tokenizer

# Languages written without spaces between words: each token (complete UTF-8) is a word.
NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
_PUNCTUATION = set("\"'“”‘’«»¿¡.,!?:;…。，！？：；、)]}>-")


@dataclass(frozen=True)
class WordTiming:
    word: str  # as decoded, with its leading space
    tokens: tuple[int, ...]
    start: float  # seconds from the start of the window
    end: float
    probability: float


@dataclass(frozen=True)
class AlignRow:
    text_tokens: tuple[int, ...]  # the text to place (no special tokens)
    n_frames: int  # mel frames of real audio in the window (100 per second)
    language: str = "en"
    task: str = "transcribe"
    split_at: int = 0  # no word spans this token index (the end of a forced prefix)
    tail: bool = False  # place only the words from split_at on (the prefix's are known), ...
    start_frame: int = 0  # ... over the mel frames from this one on (where the known words end)


def split_words(
    tokenizer: Tokenizer, tokens: Sequence[int], language: str = "en", split_at: int = 0
) -> list[list[int]]:
    """Group text tokens into words: a word starts at a token beginning with a space (or, for languages
    written without spaces, at every complete character); punctuation joins the word before it. A word
    always starts at token index ``split_at`` when it is inside the text."""
    words: list[list[int]] = []
    pending: list[int] = []  # tokens whose bytes are not yet complete UTF-8
    for index, token in enumerate(tokens):
        if index == split_at and pending:  # incomplete bytes before the split stay on its left
            if words:
                words[-1].extend(pending)
            else:
                words.append(pending)
            pending = []
        pending.append(token)
        try:
            text = tokenizer.decode_bytes(pending).decode("utf-8")
        except UnicodeDecodeError:
            continue
        starts_word = language in NO_SPACE_LANGUAGES or text.startswith(" ") or not words
        if text.strip() and all(ch in _PUNCTUATION for ch in text.strip()) and words:
            starts_word = False
        if index + 1 - len(pending) == split_at and split_at > 0:
            starts_word = True
        if starts_word:
            words.append(pending)
        else:
            words[-1].extend(pending)
        pending = []
    if pending:
        if words:
            words[-1].extend(pending)
        else:
            words.append(pending)
    return words


def median_filter(x: Tensor, width: int) -> Tensor:
    """Median over a sliding window of odd ``width`` along the last dimension (reflect-padded)."""
    if width <= 1 or x.shape[-1] <= width // 2:
        return x
    pad = width // 2
    shape = x.shape
    padded = F.pad(x.reshape(-1, 1, shape[-1]), (pad, pad), mode="reflect")  # (N, 1, F + 2 pad)
    return padded.unfold(-1, width, 1).median(dim=-1).values.reshape(shape)


def _reflect_index(lengths: Tensor, width: int, pad: int) -> Tensor:
    """Column indices (B, width + 2 pad) that read each row's first ``lengths[b]`` columns reflect-padded
    by ``pad`` on both sides (columns past a row's length reflect at its own end)."""
    j = torch.arange(-pad, width + pad, device=lengths.device)[None, :]  # (1, W + 2p)
    n = lengths[:, None]  # (B, 1)
    j = j.abs()  # reflect at the start
    j = torch.where(j > n - 1, 2 * (n - 1) - j, j)  # reflect at the row's end
    return j.clamp(min=0)


def _masked_median_filter(x: Tensor, lengths: Tensor, width: int) -> Tensor:
    """``median_filter`` of each row of x (B, R, W) over its first ``lengths[b]`` columns."""
    if width <= 1:
        return x
    pad = width // 2
    b, r, w = x.shape
    index = _reflect_index(lengths, w, pad)[:, None, :].expand(b, r, w + 2 * pad)  # (B, R, W + 2p)
    padded = x.gather(2, index)
    filtered = padded.unfold(-1, width, 1).median(dim=-1).values  # (B, R, W)
    short = (lengths <= pad)[:, None, None]  # too short to filter: as median_filter, left as is
    return torch.where(short, x, filtered)


def dtw_row_starts(cost: Tensor, n_rows: Tensor, n_cols: Tensor) -> Tensor:
    """For each matrix b of ``cost`` (B, N, M), restricted to its first ``n_rows[b]`` rows and ``n_cols[b]``
    columns: the first column the least-cost monotonic path (steps right, down, or diagonal, from the
    top-left to the bottom-right cell) takes in each row, (B, N) (rows past n_rows[b]: undefined).

    Computed one row at a time, each row a prefix sum and a running minimum over its columns: the cost of
    reaching (i, j) is min over k <= j of [best entry into row i at column k] + [cost of row i from k to j].
    Ties break as the textbook recurrence does: diagonal, then down, then right.
    """
    b, n, m = cost.shape
    device = cost.device
    cost = cost.double()
    # acc[:, i, j]: least cost of a path to cell (i - 1, j - 1), with a row and a column -1 in front
    acc = torch.full((b, n + 1, m + 1), float("inf"), dtype=torch.float64, device=device)
    acc[:, 0, 0] = 0.0
    for i in range(n):  # six kernels a row
        enter = torch.minimum(acc[:, i, :-1], acc[:, i, 1:])  # (B, M): entering (i, j) from above
        sums = cost[:, i].cumsum(dim=1)  # (B, M)
        best = torch.cummin(enter - (sums - cost[:, i]), dim=1).values  # minus the row's cost before column j
        torch.add(sums, best, out=acc[:, i + 1, 1:])
    # Which way each cell was entered, for all cells at once: 0 diagonal, 1 down, 2 right.
    diag, down, left = acc[:, :-1, :-1], acc[:, :-1, 1:], acc[:, 1:, :-1]  # (B, N, M) each
    take_diag = (diag < down) & (diag < left)
    take_down = ~take_diag & (down < diag) & (down < left)
    cols = torch.arange(m, device=device)
    # The last column at or before j where the path could leave row i (entered diagonally or from above).
    leave_at = torch.where(take_diag | take_down, cols, -1).cummax(dim=2).values  # (B, N, M)
    # Back from each matrix's bottom-right cell: in row i the path runs left while it came from the left.
    rows = torch.arange(b, device=device)
    active = torch.arange(n, device=device)[None, :] < n_rows.to(device)[:, None]  # (B, N): rows on the path
    at = (n_cols - 1).to(device)  # (B,) the column where the path is in the current row
    starts = torch.zeros((b, n), dtype=torch.long, device=device)
    for i in range(n - 1, -1, -1):  # seven kernels a row
        first = leave_at[rows, i, at].clamp(min=0)  # (B,)
        starts[:, i] = first
        nxt = (first - take_diag[rows, i, first].long()).clamp(min=0)
        at = torch.where(active[:, i], nxt, at)
    return starts


# Rows aligned together: on a GPU a whole batch (the warp's launches are paid once); on the CPU one at a
# time, no slower there (two cores, four 6-28 s windows: 22-25 s for eight batches either way) and only
# one row's attention matrices in memory (batch peak RSS ~620 MB, against 660-690 MB with all four).
ALIGN_ROWS = {"cpu": 1, "cuda": 256}


@torch.inference_mode()
def align(
    model: Whisper, tokenizer: Tokenizer, cache: KVCache, rows: Sequence[AlignRow], medfilt_width: int = 7
) -> list[list[WordTiming]]:
    """Word timings for each row, in cache rows 0..len(rows)-1 whose cross-attention K/V are set.

    Up to ``ALIGN_ROWS`` rows are aligned at once: one decoder pass, then the attention matrices of all
    of them, padded to the longest, are normalised, filtered and warped together (each within its own
    tokens and frames)."""
    out: list[list[WordTiming]] = []
    step = ALIGN_ROWS.get(cache.self_k.device.type, 64)
    for lo in range(0, len(rows), step):
        hi = min(len(rows), lo + step)
        out += _align_rows(model, tokenizer, cache.view(lo, hi), rows[lo:hi], medfilt_width)
    return out


def _align_rows(
    model: Whisper, tokenizer: Tokenizer, cache: KVCache, rows: Sequence[AlignRow], medfilt_width: int
) -> list[list[WordTiming]]:
    device = cache.self_k.device
    out: list[list[WordTiming]] = [[] for _ in rows]
    heads = model.alignment_heads
    prefixes = [[*tokenizer.sot_sequence(r.language, r.task), tokenizer.no_timestamps] for r in rows]
    sequences = [[*p, *r.text_tokens, tokenizer.eot] for p, r in zip(prefixes, rows, strict=True)]
    width = max(len(s) for s in sequences)
    n = len(rows)
    host = np.full((n, width), tokenizer.eot, dtype=np.int64)
    for i, seq in enumerate(sequences):
        host[i, : len(seq)] = seq
    tokens = torch.from_numpy(host).to(device)
    positions = torch.arange(width, device=device).expand(n, width)
    skip = [r.split_at if r.tail else 0 for r in rows]  # tokens not placed (known words)
    n_text = [len(r.text_tokens) - k for r, k in zip(rows, skip, strict=True)]  # tokens placed
    if max(n_text) == 0:
        return out
    firsts = [len(p) - 1 + k for p, k in zip(prefixes, skip, strict=True)]  # the row predicting the first placed
    n_max = max(n_text) + 1  # placed tokens and the end of text
    # Each row's placed part, from its own first position: (B, N + 1) positions.
    take = torch.tensor(firsts, device=device)[:, None] + torch.arange(n_max, device=device)[None, :]
    take = take.clamp(max=width - 1)
    hidden, weights_all = model.decoder.forward_with_cross_qk(
        tokens, positions, cache, kv_len=width, heads=heads, select=take[:, : n_max - 1]
    )  # (B, N, D): the states predicting each placed token; (B, Hs, T, Ta): the alignment heads' weights
    n_positions = weights_all.shape[-1]
    ends = [max(1, min(r.n_frames // 2, n_positions)) for r in rows]  # audio positions of each row
    offsets = [min(r.start_frame // 2 if r.tail else 0, e - 1) for r, e in zip(rows, ends, strict=True)]
    n_audio = [e - o for e, o in zip(ends, offsets, strict=True)]  # positions the words are placed over
    f_max = max(n_audio)
    audio_at = torch.tensor(offsets, device=device)[:, None] + torch.arange(f_max, device=device)[None, :]  # (B, F)
    w = weights_all.gather(
        2, take[:, None, :, None].expand(n, weights_all.shape[1], n_max, n_positions)
    ).gather(3, audio_at.clamp(max=n_positions - 1)[:, None, None, :].expand(n, weights_all.shape[1], n_max, f_max))
    # (B, Hs, N + 1, F)
    frames = torch.tensor(n_audio, device=device)
    texts = torch.tensor(n_text, device=device) + 1  # (B,) rows in use: placed tokens and the end of text
    frame_ok = torch.arange(f_max, device=device)[None, :] < frames[:, None]  # (B, F)
    row_ok = torch.arange(n_max, device=device)[None, :] < texts[:, None]  # (B, N + 1)
    w = w.masked_fill(~frame_ok[:, None, None, :], float("-inf")).softmax(dim=-1)  # over each row's frames
    mask = row_ok[:, None, :, None].to(w.dtype)  # (B, 1, N + 1, 1)
    mean = (w * mask).sum(dim=2, keepdim=True) / texts[:, None, None, None]  # (B, Hs, 1, F)
    var = (((w - mean) * mask) ** 2).sum(dim=2, keepdim=True) / texts[:, None, None, None]
    w = (w - mean) / (var.sqrt() + 1e-8)  # normalised per frame over the row's own tokens
    hs = w.shape[1]
    w = _masked_median_filter(w.reshape(n * hs, n_max, f_max), frames.repeat_interleave(hs), medfilt_width)
    matrix = w.reshape(n, hs, n_max, f_max).mean(dim=1)  # (B, N + 1, F)
    starts = dtw_row_starts(-matrix, texts, frames)  # (B, N + 1) first position of each placed row
    jump_times = ((starts + torch.tensor(offsets, device=device)[:, None]).cpu().double() * TIME_PER_TOKEN).tolist()
    nxt = tokens.gather(1, (take[:, : n_max - 1] + 1).clamp(max=width - 1))  # (B, N) the placed tokens
    token_probs = model.decoder.token_logprobs(hidden, nxt).exp().tolist()  # (B, N)
    for b, row in enumerate(rows):
        if n_text[b] == 0:
            continue
        times = jump_times[b][: n_text[b] + 1]
        end_of_audio = row.n_frames * HOP_LENGTH / 16000
        k = 0
        placed = row.text_tokens[skip[b] :]
        for word_tokens in split_words(tokenizer, placed, row.language, row.split_at - skip[b]):
            start = times[min(k, len(times) - 1)]
            k += len(word_tokens)
            end = times[min(k, len(times) - 1)]
            out[b].append(
                WordTiming(
                    word=tokenizer.decode(word_tokens),
                    tokens=tuple(word_tokens),
                    start=round(min(start, end_of_audio), 3),
                    end=round(min(max(end, start), end_of_audio), 3),
                    probability=round(float(np.mean(token_probs[b][k - len(word_tokens) : k])), 4),
                )
            )
    return out
