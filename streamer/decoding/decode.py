"""Decoding one 30-second window (or a batch of them): greedy, sampling and beam search.

The decoder runs on the model's preallocated KV cache: the prompt is prefilled once, then each step
feeds one token per row at its position. Rows of a beam are reordered in place.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from streamer.decoding.alignment import WordTiming
from streamer.decoding.greedy import RowRequest, decode_rows
from streamer.decoding.rules import LogitRules, RuleState
from streamer.model.whisper import KVCache, Whisper
from streamer.tokenizer import Tokenizer


@dataclass(frozen=True)
class DecodingOptions:
    task: str = "transcribe"  # or "translate"
    language: str | None = None  # None: detect (multilingual models); English-only models ignore it
    temperature: float = 0.0
    sample_len: int | None = None  # most tokens sampled, default n_text_ctx // 2 (224)
    best_of: int | None = None  # independent samples at temperature > 0
    beam_size: int | None = None  # beam search at temperature 0
    patience: float | None = None
    length_penalty: float | None = None
    prompt: tuple[int, ...] = ()  # previous text, as context
    prefix: tuple[int, ...] = ()  # forced start of this window's text
    suppress_tokens: tuple[int, ...] | None = None  # None: Whisper's non-speech symbols
    suppress_blank: bool = True
    without_timestamps: bool = False
    max_initial_timestamp: float | None = 1.0


@dataclass
class DecodingResult:
    tokens: list[int]  # sampled tokens (after any forced prefix), end-of-text excluded
    text: str
    language: str
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float
    language_probs: dict[str, float] | None = field(default=None, repr=False)
    words: list[WordTiming] | None = None  # with word timestamps: the prefix's words (unless only the
    # decoded ones were placed: Request.align_from) and the decoded ones


def compression_ratio(text: str) -> float:
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


def suppress_list(tokenizer: Tokenizer, options: DecodingOptions) -> list[int]:
    base = list(tokenizer.non_speech_tokens) if options.suppress_tokens is None else list(options.suppress_tokens)
    specials = [tokenizer.transcribe, tokenizer.translate, tokenizer.sot, tokenizer.sot_prev, tokenizer.sot_lm]
    if tokenizer.no_speech is not None:
        specials.append(tokenizer.no_speech)
    return sorted(set(base + specials))


@torch.inference_mode()
def detect_language(model: Whisper, tokenizer: Tokenizer, audio_features: Tensor) -> list[dict[str, float]]:
    """Probabilities of each language, per window of audio_features (B, Ta, D)."""
    b = audio_features.shape[0]
    cache = model.decoder.new_cache(b, audio_features.shape[1])
    model.decoder.set_audio(audio_features, cache)
    tokens = torch.full((b, 1), tokenizer.sot, dtype=torch.long, device=audio_features.device)
    positions = torch.zeros_like(tokens)
    logits = model.decoder(tokens, positions, cache, kv_len=1)[:, 0]  # (B, V)
    lang = torch.tensor(tokenizer.language_tokens, device=logits.device)
    probs = logits[:, lang].softmax(dim=-1).cpu()  # (B, n_languages)
    return [dict(zip(tokenizer.language_codes, row.tolist(), strict=True)) for row in probs]


class _Sequences:
    """Token rows of a decode: a fixed (rows, n_text_ctx) buffer with one shared length."""

    def __init__(self, initial: list[int], rows: int, capacity: int, device: torch.device):
        self.buffer = torch.zeros(rows, capacity, dtype=torch.long, device=device)
        self.buffer[:, : len(initial)] = torch.tensor(initial, device=device)
        self.length = len(initial)

    def append(self, tokens: Tensor) -> None:
        self.buffer[:, self.length] = tokens
        self.length += 1

    def reorder(self, index: Tensor) -> None:
        self.buffer.copy_(self.buffer.index_select(0, index))


def initial_tokens(
    tokenizer: Tokenizer, n_ctx: int, language: str, task: str, prompt: Sequence[int], prefix: Sequence[int],
    timestamps: bool,
) -> list[int]:
    """The decoder's prompt: [<|startofprev|> context], start-of-transcript sequence, [<|notimestamps|>], prefix."""
    tokens = [tokenizer.sot_prev, *prompt[-(n_ctx // 2 - 1) :]] if prompt else []
    tokens += tokenizer.sot_sequence(language, task)
    if not timestamps:
        tokens.append(tokenizer.no_timestamps)
    tokens += prefix[-(n_ctx // 2 - 1) :]
    return tokens


@torch.inference_mode()
def decode(
    model: Whisper, tokenizer: Tokenizer, mel: Tensor, options: DecodingOptions = DecodingOptions()
) -> list[DecodingResult]:
    """Decode mel windows (B, n_mels, 2 * Ta) or (n_mels, 2 * Ta); one result per window."""
    if mel.dim() == 2:
        mel = mel.unsqueeze(0)
    audio_features = model.encoder(mel.to(device=model.device, dtype=model.dtype))  # (B, Ta, D)
    return decode_features(model, tokenizer, audio_features, options)


@torch.inference_mode()
def decode_features(
    model: Whisper, tokenizer: Tokenizer, audio_features: Tensor, options: DecodingOptions
) -> list[DecodingResult]:
    """Decode precomputed encoder output (B, Ta, D), all windows with the same options."""
    if options.beam_size is not None and options.best_of is not None:
        raise ValueError("beam_size and best_of cannot be given together")
    if options.temperature == 0 and options.best_of is not None:
        raise ValueError("best_of with greedy sampling (temperature 0) has no effect")
    language_probs: list[dict[str, float]] | None = None
    if tokenizer.is_multilingual and options.language is None:
        language_probs = detect_language(model, tokenizer, audio_features)
        languages = [max(p, key=p.__getitem__) for p in language_probs]
    else:
        languages = [options.language or "en"] * audio_features.shape[0]
    results: list[DecodingResult | None] = [None] * len(languages)
    # Windows of different languages have different prompts: decode each language group together.
    for language in dict.fromkeys(languages):
        idx = [i for i, lang in enumerate(languages) if lang == language]
        group = _decode_batch(model, tokenizer, audio_features[idx], replace(options, language=language))
        for i, r in zip(idx, group, strict=True):
            r.language_probs = language_probs[i] if language_probs else None
            results[i] = r
    return [r for r in results if r is not None]


def _decode_batch(
    model: Whisper, tokenizer: Tokenizer, audio_features: Tensor, options: DecodingOptions
) -> list[DecodingResult]:
    device = audio_features.device
    n_ctx = model.dims.n_text_ctx
    n_audio = audio_features.shape[0]
    language = options.language or "en"
    beam = options.beam_size is not None and options.temperature == 0
    n_group = (options.beam_size or 1) if beam else (options.best_of or 1)
    rows = n_audio * n_group
    initial = initial_tokens(
        tokenizer, n_ctx, language, options.task, options.prompt, options.prefix, not options.without_timestamps
    )
    sample_len = options.sample_len or n_ctx // 2
    rules = LogitRules(
        tokenizer, model.dims.n_vocab, device, suppress_list(tokenizer, options), options.suppress_blank,
        max_initial_timestamp=options.max_initial_timestamp,
    )
    cache = model.decoder.new_cache(rows, audio_features.shape[1], windows=n_audio)  # a window per group of rows
    model.decoder.set_audio(audio_features, cache)
    if beam:
        candidates = beam_search(model, tokenizer, cache, rules, initial, options, n_audio, n_group, sample_len)
    else:
        request = RowRequest(
            tokens=tuple(initial), sot_index=initial.index(tokenizer.sot), temperature=options.temperature,
            timestamps=not options.without_timestamps, sample_len=sample_len,
        )
        found = decode_rows(model, cache, [request] * rows, rules, tokenizer.no_speech)
        groups = [found[a * n_group : (a + 1) * n_group] for a in range(n_audio)]
        candidates = [([(r.tokens, r.sum_logprob) for r in g], g[0].no_speech_prob) for g in groups]

    results = []
    for a in range(n_audio):
        tokens, sum_lp = best_hypothesis(candidates[a], options.length_penalty)
        text = tokenizer.decode(tokens).strip()
        results.append(
            DecodingResult(
                tokens=tokens,
                text=text,
                language=language,
                avg_logprob=sum_lp / (len(tokens) + 1),
                no_speech_prob=candidates[a][1],
                temperature=options.temperature,
                compression_ratio=compression_ratio(text),
            )
        )
    return results


Candidates = tuple[list[tuple[list[int], float]], float]  # (tokens, sum of log-probs) per hypothesis; no-speech


def best_hypothesis(candidates: Candidates, length_penalty: float | None = None) -> tuple[list[int], float]:
    """The candidate with the best length-normalised score: its tokens and sum of log-probabilities."""
    _, tokens, sum_lp = max(
        ((lp / _length_penalty(len(toks), length_penalty), toks, lp) for toks, lp in candidates[0]),
        key=lambda s: s[0],
    )
    return tokens, sum_lp


def beam_search(
    model: Whisper, tokenizer: Tokenizer, cache: KVCache, rules: LogitRules, initial: list[int],
    options: DecodingOptions, n_audio: int, beam_size: int, sample_len: int,
) -> list[Candidates]:
    """Beam search from ``initial`` over ``n_audio`` windows in cache rows 0..n_audio * beam_size - 1
    (each window's ``beam_size`` rows consecutive, their cross-attention K/V already set); per window,
    the finished hypotheses and the no-speech probability."""
    device = cache.self_k.device
    n_ctx = model.dims.n_text_ctx
    rows = n_audio * beam_size
    sample_begin = len(initial)
    state = RuleState.new([not options.without_timestamps] * rows, device)
    seqs = _Sequences(initial, rows, n_ctx + 1, device)
    # The beams of a window begin alike: its first row reads the initial tokens, the others copy its state
    # (a final decode's prefill over a prompt and prefix of ~100-150 tokens was 29% of a beam search's
    # time when every beam computed it).
    positions = torch.arange(sample_begin, device=device).expand(n_audio, -1)
    select = torch.tensor([initial.index(tokenizer.sot), sample_begin - 1], device=device).expand(n_audio, -1)
    first = seqs.buffer[::beam_size, :sample_begin]  # (n_audio, sample_begin)
    prefill = model.decoder(first, positions, cache.leaders(beam_size), kv_len=sample_begin, select=select)
    leader = torch.arange(rows, device=device) // beam_size * beam_size  # (rows,)
    cache.reorder(leader, sample_begin)
    no_speech_probs = [0.0] * n_audio
    if tokenizer.no_speech is not None:
        no_speech_probs = prefill[:, 0].softmax(dim=-1)[:, tokenizer.no_speech].tolist()
    logits = prefill[:, 1].repeat_interleave(beam_size, dim=0)  # (rows, V)
    searcher = _BeamSearch(options, n_audio, beam_size, tokenizer.eot)
    for _ in range(sample_len):
        if options.without_timestamps:  # the text rules only (the timestamp rules cost as much as a step)
            filtered = rules.apply_text(logits[:, None], (state.n_sampled == 0)[:, None])[:, 0]
        else:
            filtered = rules.apply(logits, state)
        logprobs = torch.log_softmax(filtered, dim=-1)
        next_tokens, source, done = searcher.step(seqs, logprobs)
        cache.reorder(source, seqs.length)  # within a window's rows: the cross-attention K/V stay
        state.reorder(source)
        seqs.reorder(source)
        seqs.append(next_tokens)
        state.advance(next_tokens, rules.timestamp_begin)
        if done or seqs.length >= n_ctx:
            break
        positions = torch.full((rows, 1), seqs.length - 1, dtype=torch.long, device=device)
        logits = model.decoder(next_tokens[:, None], positions, cache, kv_len=seqs.length)[:, 0]
    finals = searcher.finalize(seqs, sample_begin)
    return [(finals[a], no_speech_probs[a]) for a in range(n_audio)]


def _until_eot(tokens: list[int], eot: int) -> list[int]:
    return tokens[: tokens.index(eot)] if eot in tokens else tokens


def _length_penalty(length: int, length_penalty: float | None) -> float:
    return float(length) if length_penalty is None else ((5 + length) / 6) ** length_penalty


class _BeamSearch:
    """Beam search with patience, as Whisper does it: beam_size live rows per window."""

    def __init__(self, options: DecodingOptions, n_audio: int, beam_size: int, eot: int):
        self.beam_size = beam_size
        self.n_audio = n_audio
        self.eot = eot
        self.max_candidates = round(beam_size * (options.patience or 1.0))
        self.finished: list[dict[tuple[int, ...], float]] = [{} for _ in range(n_audio)]
        self.sum_logprobs = [0.0] * (n_audio * beam_size)

    def step(self, seqs: _Sequences, logprobs: Tensor) -> tuple[Tensor, Tensor, bool]:
        device = logprobs.device
        top_lp, top_tok = logprobs.topk(self.beam_size + 1, dim=-1)
        top_lp_h, top_tok_h = top_lp.tolist(), top_tok.tolist()
        prefixes = seqs.buffer[:, : seqs.length].tolist()
        next_tokens: list[int] = []
        sources: list[int] = []
        new_sums: list[float] = []
        for a in range(self.n_audio):
            scores: dict[tuple[int, ...], float] = {}
            origin: dict[tuple[int, ...], int] = {}
            for j in range(self.beam_size):
                row = a * self.beam_size + j
                prefix = tuple(prefixes[row])
                for lp, tok in zip(top_lp_h[row], top_tok_h[row], strict=True):
                    seq = (*prefix, tok)
                    scores[seq] = self.sum_logprobs[row] + lp
                    origin[seq] = row
            saved = 0
            new_finished: dict[tuple[int, ...], float] = {}
            for seq in sorted(scores, key=scores.__getitem__, reverse=True):
                if seq[-1] == self.eot:
                    new_finished[seq] = scores[seq]
                else:
                    new_sums.append(scores[seq])
                    next_tokens.append(seq[-1])
                    sources.append(origin[seq])
                    saved += 1
                    if saved == self.beam_size:
                        break
            done_here = self.finished[a]
            for seq in sorted(new_finished, key=new_finished.__getitem__, reverse=True):
                if len(done_here) >= self.max_candidates:
                    break
                done_here[seq] = new_finished[seq]
        self.sum_logprobs = new_sums
        done = all(len(f) >= self.max_candidates for f in self.finished)
        return (
            torch.tensor(next_tokens, dtype=torch.long, device=device),
            torch.tensor(sources, dtype=torch.long, device=device),
            done,
        )

    def finalize(self, seqs: _Sequences, sample_begin: int) -> list[list[tuple[list[int], float]]]:
        rows = seqs.buffer[:, : seqs.length].tolist()
        out = []
        for a in range(self.n_audio):
            done_here = self.finished[a]
            if len(done_here) < self.beam_size:
                live = range(a * self.beam_size, (a + 1) * self.beam_size)
                for row in sorted(live, key=lambda r: self.sum_logprobs[r], reverse=True):
                    done_here[(*rows[row], self.eot)] = self.sum_logprobs[row]
                    if len(done_here) >= self.beam_size:
                        break
            out.append([(list(seq[sample_begin:-1]), lp) for seq, lp in done_here.items()])
        return out
