"""The batched inference engine: the one entry point the streaming engine and the daemon use.

It owns a model and a KV cache pool of ``max_batch`` fixed slots, allocated once. ``encode`` runs the
encoder over a batch of mel windows (optionally shorter than 30 s: whisper.cpp's audio_ctx idea).
``decode`` runs independent requests together, each with its own prompt, prefix, language, task,
temperature and timestamp mode, in slots of the pool; rows finish independently and the slots are
reused by the next call without reallocation.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from streamer import COMPUTE_TYPES
from streamer.decoding.alignment import AlignRow, WordTiming, align
from streamer.decoding.decode import (
    DecodingOptions,
    DecodingResult,
    beam_search,
    best_hypothesis,
    compression_ratio,
    initial_tokens,
    suppress_list,
)
from streamer.decoding.greedy import RowRequest, RowResult, decode_rows
from streamer.decoding.rules import LogitRules
from streamer.decoding.step import BUCKETS, StepGraphs
from streamer.errors import StreamerError
from streamer.mel import pad_or_trim
from streamer.model.int8 import Int8Linear, quantize_linears
from streamer.model.loading import LoadedModel
from streamer.model.whisper import KVCache, Silence

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    audio_features: Tensor  # (Ta, D), from Engine.encode
    prompt: tuple[int, ...] = ()  # earlier text, as context
    prefix: tuple[int, ...] = ()  # forced start of this text (not returned in the result)
    language: str = "en"
    task: str = "transcribe"
    temperature: float = 0.0
    timestamps: bool = True
    sample_len: int = 224
    word_timestamps: bool = False  # align the words (prefix included) to the audio ...
    align_from: int | None = None  # ... or only the decoded words, over mel frames from this one on
    n_frames: int | None = None  # mel frames of real audio in the window (default: all of it)
    draft: tuple[int, ...] = ()  # text expected after the prefix (greedy, no timestamps): checked in one pass
    beam_size: int | None = None  # beam search (at temperature 0), in a batch of its own
    heard: int | None = None  # audio_features from this position on are Engine.silence()'s (Engine.encode's)

    @property
    def beams(self) -> int:
        """Cache rows the request decodes in: its beams, or 1."""
        return (self.beam_size or 1) if self.temperature == 0 else 1


def quantize_int8(loaded: LoadedModel) -> None:
    """int8 weights for every linear layer, the tied output projection included (CPU): the projection
    gets its own int8 copy, and the token embedding serves only the input side, kept as a float16
    checkpoint stored it (exact, and 38 of tiny.en's 76 MB saved)."""
    decoder = loaded.model.decoder
    quantize_linears(loaded.model)
    decoder.projection = Int8Linear(decoder.token_embedding.weight, None)
    if loaded.half_token_table is not None:
        decoder.token_embedding.weight = nn.Parameter(loaded.half_token_table, requires_grad=False)
        loaded.half_token_table = None


def bfloat16_is_native() -> bool:
    """This CPU multiplies bfloat16 in hardware (AVX-512 BF16, or AMX) and PyTorch runs its AVX-512
    kernels here (not when ``ATEN_CPU_CAPABILITY`` holds it to AVX2 or none)."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX512", "AMX"):
        return False
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    avx512_bf16 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return any(check is not None and bool(check()) for check in (amx, avx512_bf16))


def apply_compute_type(loaded: LoadedModel, compute_type: str) -> None:
    """Convert a freshly loaded float32 model in place: float32 (as is), int8 (CPU), int8_bfloat16 (CPU:
    int8, with the encoder's attention in bfloat16), float16/bfloat16."""
    model = loaded.model
    if compute_type not in COMPUTE_TYPES:
        raise StreamerError(f"--compute-type: {compute_type!r} is not one of {', '.join(COMPUTE_TYPES)}")
    if compute_type in ("int8", "int8_bfloat16"):
        if model.device.type != "cpu":
            raise StreamerError(f"--compute-type {compute_type} runs on the CPU only")
        quantize_int8(loaded)
        if compute_type == "int8_bfloat16":
            if not bfloat16_is_native():
                log.warning("this CPU has no bfloat16 instructions PyTorch uses (AVX-512 BF16, AMX): "
                            "int8_bfloat16 runs slower here than int8")
            model.narrow_encoder_attention(torch.bfloat16)
    elif compute_type == "float16" and model.device.type == "cpu":
        raise StreamerError("--compute-type float16 needs a GPU (use float32, int8 or bfloat16 on the CPU)")
    elif compute_type in ("float16", "bfloat16"):
        model.to(getattr(torch, compute_type))
    loaded.half_token_table = None  # kept for int8 only


STEP_MODES = ("auto", "eager", "static", "graph")
# The log-mel level of the window of silence whose states the positions after a window's audio take
# (``Engine.encode``'s ``heard``): silence after the clamp, 8 below the window's loudest frame, is at
# -0.8 to -0.6 in most windows of speech (-1.0 to -0.6 in 300 windows of bench/speech.py's sets).
SILENCE_LEVEL = -0.7
AUDIO_BUCKET = 250  # audio positions (5 s) that fixed-shape steps pad a batch's encoder output to a multiple of


class Engine:
    """Batched encode and decode over one slot pool.

    ``step`` is how the one-token decode step runs: "eager" attends to the positions used so far and
    stops as soon as every row is done; "static" runs the fixed-shape step of each batch bucket (whole
    cache, padded rows) eagerly; "graph" replays it as a CUDA graph captured once per bucket. "auto" is
    "graph" on a GPU and "eager" on the CPU.

    ``max_windows`` (default ``max_batch``) bounds the windows decoded together: the pool holds
    cross-attention keys and values for that many (a beam search's rows all hear one). An engine that
    decodes one window at a time with a 5-beam final (the CPU daemon) holds 18 MB of them for tiny.en,
    not 88 MB."""

    def __init__(
        self, loaded: LoadedModel, max_batch: int = 16, compute_type: str | None = None, step: str = "auto",
        max_windows: int | None = None,
    ):
        if step not in STEP_MODES:
            raise ValueError(f"step must be one of {STEP_MODES}, not {step!r}")
        windows = max_batch if max_windows is None else min(max_windows, max_batch)
        if compute_type is not None:
            apply_compute_type(loaded, compute_type)
        model = loaded.model
        self.loaded = loaded
        self.model = model
        self.tokenizer = loaded.tokenizer
        self.max_batch = max_batch  # cache rows: the most rows decoded together, and the widest beam
        self.max_windows = windows  # the most windows decoded together (cross-attention rows)
        self.cache: KVCache = model.decoder.new_cache(max_batch, windows=windows)
        self.rules = LogitRules(
            self.tokenizer, model.dims.n_vocab, model.device, suppress_list(self.tokenizer, DecodingOptions())
        )
        on_gpu = model.device.type == "cuda"
        if step == "graph" and not on_gpu:
            raise StreamerError("CUDA graphs need a CUDA device")
        self.step = ("graph" if on_gpu else "eager") if step == "auto" else step
        if windows < max_batch and self.step != "eager":
            raise ValueError("fixed-shape steps decode max_batch windows: max_windows must be max_batch")
        self.graphs = StepGraphs(model, self.cache, self.rules, self.step == "graph") if self.step != "eager" else None
        self._silence: Silence | None = None
        self._silence_kv: tuple[Tensor, Tensor] | None = None  # the silence's cross-attention K/V

    @property
    def device(self) -> torch.device:
        return self.model.device

    def replica(self) -> Engine:
        """Another engine over this one's model (the same weights, not copied) with a slot pool of its own, for a
        second inference worker (``Scheduler``); the two share the window of silence's states, which neither
        writes. tiny.en on the CPU daemon's pool: 46 MB more."""
        twin = Engine(self.loaded, self.max_batch, step=self.step, max_windows=self.max_windows)
        twin._silence, twin._silence_kv = self.silence(), self.silence_kv()
        return twin

    def prepare_steps(self) -> int:
        """Make (capture, on a GPU) the streaming decode step of every batch bucket and audio length now,
        rather than at a batch's first use (a capture costs tens of milliseconds); returns how many."""
        if self.graphs is None:
            return 0
        with torch.inference_mode():
            for bucket in BUCKETS:
                if bucket > self.max_batch:
                    break
                for n_audio in range(AUDIO_BUCKET, self.model.dims.n_audio_ctx + 1, AUDIO_BUCKET):
                    self.graphs.get(bucket, n_audio, greedy_text=True)
        return self.graphs.captures

    @torch.inference_mode()
    def encode(self, mels: Tensor, audio_ctx: int | None = None, heard: int | None = None) -> Tensor:
        """Mel windows (B, n_mels, F) -> audio features (B, Ta, D).

        With ``audio_ctx`` the windows are cut or padded to 2 * audio_ctx frames (audio_ctx / 50 s)
        instead of 30 s, which makes the encoder proportionally cheaper on short audio. With ``heard``
        (30 s windows of audio that ends before their last ``heard`` positions) only the first ``heard``
        positions are computed, the rest taken from a window of silence (``silence``): a window's own
        silence begins 8 below its loudest frame, so the silence's states are an approximation.

        On the CPU the windows go through in groups of at most 30 s of audio positions: a batch of four
        30 s windows is no faster there than four single ones (timed on two cores), and its activations
        (the MLP's (B, 1500, 1536) hidden state and its GELU) would raise the daemon's peak memory by
        ~100 MB per window.
        """
        n_audio_ctx = self.model.dims.n_audio_ctx
        frames = 2 * (audio_ctx or n_audio_ctx)
        mels = pad_or_trim(mels, frames).to(device=self.device, dtype=self.model.dtype)
        if heard is None or heard >= n_audio_ctx or frames != 2 * n_audio_ctx:
            heard = None
        group = self.encoder_rows(heard or frames // 2)
        encoded = []
        for i in range(0, mels.shape[0], group):
            rows = mels[i : i + group]
            encoded.append(self.model.encoder(rows, heard, None if heard is None else self.silence()))
        return encoded[0] if len(encoded) == 1 else torch.cat(encoded)

    @torch.inference_mode()
    def silence(self) -> Silence:
        """The encoder's states over a 30 s window of silence (log-mel frames at ``SILENCE_LEVEL``), made at
        first use (tiny.en: 20 MB in float32), with the decoder's cross-attention K/V of its features
        (``silence_kv``, 18 MB more)."""
        if self._silence is None:
            self._silence = self.model.encoder.silence(SILENCE_LEVEL)
            self._silence_kv = self.model.decoder.cross_kv(self._silence.features)  # (L, 1, H, T, Dh) each
        return self._silence

    def silence_kv(self) -> tuple[Tensor, Tensor]:
        """The cross-attention keys and values of ``silence``'s features, (L, 1, H, n_audio_ctx, Dh) each:
        a window encoded in part takes them after its own positions rather than computing them."""
        self.silence()
        assert self._silence_kv is not None  # made with the silence
        return self._silence_kv

    def encoder_rows(self, audio_ctx: int | None = None) -> int:
        """How many windows of ``audio_ctx`` positions to encode at once (any number on a GPU)."""
        if self.device.type != "cpu":
            return self.max_batch
        return max(1, self.model.dims.n_audio_ctx // (audio_ctx or self.model.dims.n_audio_ctx))

    def _row(self, request: Request) -> RowRequest:
        tokens = initial_tokens(
            self.tokenizer, self.model.dims.n_text_ctx, request.language, request.task, request.prompt,
            request.prefix, request.timestamps,
        )
        sot_index = tokens.index(self.tokenizer.sot)
        return RowRequest(
            tuple(tokens), sot_index, request.temperature, request.timestamps, request.sample_len, request.draft
        )

    def _n_audio(self, longest: int) -> int:
        """Audio positions a batch whose longest encoder output has ``longest`` is padded to: exactly that
        eagerly; on fixed-shape steps (CUDA graphs), the next multiple of ``AUDIO_BUCKET``, so that a few
        graphs serve every length."""
        if self.graphs is None:
            return longest
        return min(self.model.dims.n_audio_ctx, -(-longest // AUDIO_BUCKET) * AUDIO_BUCKET)

    def _beam_search(self, row: RowRequest, slots: KVCache, beams: int) -> RowResult:
        """One window's beam search in ``beams`` rows of ``slots`` (which hear the window): the best
        finished hypothesis, scored by its mean log-probability as Whisper does."""
        options = DecodingOptions(without_timestamps=not row.timestamps)
        candidates = beam_search(
            self.model, self.tokenizer, slots, self.rules, list(row.tokens), options, 1, beams, row.sample_len
        )[0]
        tokens, sum_logprob = best_hypothesis(candidates)
        return RowResult(tokens, sum_logprob, candidates[1])

    @torch.inference_mode()
    def decode(self, requests: list[Request]) -> list[DecodingResult]:
        """Decode independent requests in batches of the pool's slots; results in request order. Requests
        of different audio lengths share a batch: the shorter ones' cross-attention is masked past their
        own audio, so each row decodes as it would alone."""
        results: list[DecodingResult | None] = [None] * len(requests)
        for chunk in self._chunks(requests):
            for i, result in zip(chunk, self._decode_chunk([requests[i] for i in chunk]), strict=True):
                results[i] = result
        return [r for r in results if r is not None]

    def _chunks(self, requests: list[Request]) -> list[list[int]]:
        """Requests in batches of at most ``max_windows``, longest audio first; a beam search alone. Eagerly
        (the CPU), where every padded audio position costs its share, a request starts a new batch when
        it has under half the audio of the batch's longest; fixed-shape steps pay for the padding anyway."""
        order = sorted(range(len(requests)), key=lambda i: -requests[i].audio_features.shape[0])
        chunks: list[list[int]] = [[i] for i in order if requests[i].beams > 1]
        for i in order:
            if requests[i].beams > 1:
                continue
            length = requests[i].audio_features.shape[0]
            if chunks and requests[chunks[-1][0]].beams == 1 and len(chunks[-1]) < self.max_windows and (
                self.graphs is not None or 2 * length >= requests[chunks[-1][0]].audio_features.shape[0]
            ):
                chunks[-1].append(i)
            else:
                chunks.append([i])
        return chunks

    def _decode_chunk(self, requests: list[Request]) -> list[DecodingResult]:
        k = len(requests)
        lengths = [r.audio_features.shape[0] for r in requests]
        n_audio = self._n_audio(max(lengths))
        slots = self.cache.view(0, k, n_audio)
        if k == 1 and lengths[0] == n_audio:
            features = requests[0].audio_features[None]  # (1, Ta, D)
        else:
            shape = (k, n_audio, self.model.dims.n_audio_state)
            features = torch.zeros(shape, device=self.device, dtype=self.model.dtype)
            for i, r in enumerate(requests):
                features[i, : lengths[i]] = r.audio_features
        # Windows encoded in part (each to its own ``heard``) take the silence's K/V after the longest part.
        parts = [r.heard for r in requests]
        heard = None if None in parts or n_audio != self.model.dims.n_audio_ctx else max(p or 0 for p in parts)
        self.model.decoder.set_audio(
            features, slots, lengths=torch.tensor(lengths), heard=heard,
            after=None if heard is None else self.silence_kv(),
        )
        rows = [self._row(r) for r in requests]
        beams = min(requests[0].beams, self.max_batch) if k == 1 else 1
        if beams > 1:  # the beams' rows all hear the window in row 0
            found = [self._beam_search(rows[0], self.cache.view(0, beams, n_audio).hearing(1), beams)]
        else:
            found = decode_rows(self.model, slots, rows, self.rules, self.tokenizer.no_speech, self.graphs)
        words: list[list[WordTiming] | None] = [None] * k
        wanted = [i for i, r in enumerate(requests) if r.word_timestamps]
        if wanted:
            align_rows = [
                AlignRow(
                    (*requests[i].prefix, *found[i].tokens), requests[i].n_frames or 2 * lengths[i],
                    requests[i].language, requests[i].task, len(requests[i].prefix),
                    tail=requests[i].align_from is not None, start_frame=requests[i].align_from or 0,
                )
                for i in wanted
            ]
            if wanted != list(range(len(wanted))):  # the rows to align must be slots 0..len(wanted)-1
                index = torch.tensor(wanted, device=self.device)
                slots.cross_k[:, : len(wanted)] = slots.cross_k.index_select(1, index)
                slots.cross_v[:, : len(wanted)] = slots.cross_v.index_select(1, index)
                slots.audio_valid[: len(wanted)] = slots.audio_valid.index_select(0, index)
            for i, aligned in zip(wanted, align(self.model, self.tokenizer, slots, align_rows), strict=True):
                words[i] = aligned
        out = []
        for request, row, row_words in zip(requests, found, words, strict=True):
            text = self.tokenizer.decode(row.tokens).strip()
            out.append(
                DecodingResult(
                    tokens=row.tokens,
                    text=text,
                    language=request.language,
                    avg_logprob=row.sum_logprob / (len(row.tokens) + 1),
                    no_speech_prob=row.no_speech_prob,
                    temperature=request.temperature,
                    compression_ratio=compression_ratio(text),
                    words=row_words,
                )
            )
        return out
