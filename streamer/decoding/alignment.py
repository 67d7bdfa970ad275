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


def dtw(cost: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Monotonic path of least total cost through (N, M) ``cost``; returns (row indices, column indices).

    Computed one anti-diagonal at a time, so the work is vectorised over the cells of each diagonal.
    """
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf, dtype=np.float64)
    trace = np.full((n + 1, m + 1), -1, dtype=np.int8)
    acc[0, 0] = 0.0
    trace[0, :] = 2
    trace[:, 0] = 1
    for d in range(2, n + m + 1):
        i = np.arange(max(1, d - m), min(n, d - 1) + 1)
        j = d - i
        c0, c1, c2 = acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1]
        take0 = (c0 < c1) & (c0 < c2)
        take1 = ~take0 & (c1 < c0) & (c1 < c2)
        best = np.where(take0, c0, np.where(take1, c1, c2))
        acc[i, j] = cost[i - 1, j - 1] + best
        trace[i, j] = np.where(take0, 0, np.where(take1, 1, 2))
    i, j = n, m
    rows, cols = [], []
    while i > 0 or j > 0:
        rows.append(i - 1)
        cols.append(j - 1)
        t = trace[i, j]
        if t == 0:
            i, j = i - 1, j - 1
        elif t == 1:
            i -= 1
        else:
            j -= 1
    path_rows = np.array(rows[::-1])
    path_cols = np.array(cols[::-1])
    keep = (path_rows >= 0) & (path_cols >= 0)
    return path_rows[keep], path_cols[keep]


@torch.inference_mode()
def align(
    model: Whisper, tokenizer: Tokenizer, cache: KVCache, rows: Sequence[AlignRow], medfilt_width: int = 7
) -> list[list[WordTiming]]:
    """Word timings for each row, in cache rows 0..len(rows)-1 whose cross-attention K/V are set."""
    device = cache.self_k.device
    out: list[list[WordTiming]] = [[] for _ in rows]
    heads = model.alignment_heads
    prefixes = []
    for r in rows:
        prefixes.append([*tokenizer.sot_sequence(r.language, r.task), tokenizer.no_timestamps])
    sequences = [[*p, *r.text_tokens, tokenizer.eot] for p, r in zip(prefixes, rows, strict=True)]
    width = max(len(s) for s in sequences)
    n = len(rows)
    tokens = torch.full((n, width), tokenizer.eot, dtype=torch.long, device=device)
    for i, seq in enumerate(sequences):
        tokens[i, : len(seq)] = torch.tensor(seq, device=device)
    positions = torch.arange(width, device=device).expand(n, width)
    view = KVCache(cache.self_k[:, :n], cache.self_v[:, :n], cache.cross_k[:, :n], cache.cross_v[:, :n])
    logits, qks = model.decoder.forward_with_cross_qk(tokens, positions, view, kv_len=width)  # (B, T, V)
    weights_all = torch.stack([qks[layer][:, head] for layer, head in heads], dim=1)  # (B, Hs, T, Ta)
    for b, (prefix, row) in enumerate(zip(prefixes, rows, strict=True)):
        n_text = len(row.text_tokens)
        if n_text == 0:
            continue
        first = len(prefix) - 1  # the row predicting the first text token
        n_audio = max(1, min(row.n_frames // 2, weights_all.shape[-1]))
        w = weights_all[b, :, first : first + n_text + 1, :n_audio].softmax(dim=-1)  # (Hs, N + 1, F)
        std, mean = torch.std_mean(w, dim=-2, keepdim=True, unbiased=False)
        w = (w - mean) / (std + 1e-8)
        matrix = median_filter(w, medfilt_width).mean(dim=0)  # (N + 1, F)
        text_index, time_index = dtw(-matrix.double().cpu().numpy())
        jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
        jump_times = time_index[jumps] * TIME_PER_TOKEN  # (N + 1,) first frame of each row
        probs = logits[b, first : first + n_text].softmax(dim=-1)  # (N, V)
        token_probs = probs[torch.arange(n_text, device=device), tokens[b, first + 1 : first + 1 + n_text]]
        token_probs_list = token_probs.tolist()
        end_of_audio = row.n_frames * HOP_LENGTH / 16000
        k = 0
        for word_tokens in split_words(tokenizer, row.text_tokens, row.language, row.split_at):
            start = float(jump_times[min(k, len(jump_times) - 1)])
            k += len(word_tokens)
            end = float(jump_times[min(k, len(jump_times) - 1)])
            out[b].append(
                WordTiming(
                    word=tokenizer.decode(word_tokens),
                    tokens=tuple(word_tokens),
                    start=round(min(start, end_of_audio), 3),
                    end=round(min(max(end, start), end_of_audio), 3),
                    probability=round(float(np.mean(token_probs_list[k - len(word_tokens) : k])), 4),
                )
            )
    return out
