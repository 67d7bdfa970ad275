"""One stream's transcription state, sans I/O: audio in, window jobs out, results in, events out.

``feed`` buffers audio and runs the VAD; ``next_job`` says what to decode when the caller has an
inference slot (the uncommitted audio of the current utterance, prompted with earlier committed text,
its own committed words forced as a prefix, after the utterances just before it when the pause between
was short: their audio and committed words too); ``complete`` turns the result into events:

- while speech goes on, words on which the hypotheses of the last moments agree are committed (a
  ``final``, append-only) and the rest is the ``partial`` tail;
- at speech_end (or ``finalize``) the whole utterance is decoded once more, with temperature fallback
  when the text looks like a loop or is improbable, and committed at once;
- silence never reaches the model, a window the model judges to be non-speech commits nothing, a
  decoding loop is cut and resets the prompt, tokens per second of audio are capped, and no word is
  committed over audio the VAD found no voice in.

Nothing here blocks or knows about threads: the caller serialises calls.
"""

from __future__ import annotations

import itertools
import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from streamer import N_SAMPLES, SAMPLE_RATE
from streamer.errors import StreamerError
from streamer.streaming.events import Event, Final, Partial, UtteranceEnd, Word
from streamer.streaming.policy import agreed_prefix, ending_by, find_loop, majority_prefix, shared_tokens, word_key
from streamer.streaming.ring import BufferFull, RingBuffer
from streamer.streaming.segmenter import SpeechEnd, SpeechStart, VadSegmenter

if TYPE_CHECKING:
    from streamer.decoding.decode import DecodingResult


RING_INITIAL_SECONDS = 8  # a session's audio storage to begin with; it doubles when an utterance needs more


@dataclass(frozen=True)
class StreamConfig:
    language: str | None = "en"  # None: detected on the first utterance (multilingual models)
    task: str = "transcribe"
    partials: bool = True
    interval: float = 0.3  # seconds of new audio between re-decodes of the utterance
    min_audio: float = 0.3  # shortest audio decoded for a partial
    # LocalAgreement over time: a word is committed once every hypothesis of the last ``agree_span``
    # seconds of audio (at least two hypotheses) agrees on it; a word the model is unsure of (probability
    # under ``commit_probability``) needs ``unlikely_span``: hypotheses that heard more audio after it,
    # and ``cold_span`` while nothing of the utterance is committed if its hypotheses have begun with
    # different words (its first words, heard without context, are where tiny.en wavers most: "I'll",
    # "I'd like", "Unless"). On bench/streaming.py's four sets (558 words, inline, int8 per channel) a span
    # of 0.9 s rather than 0.6 s cuts the streamed errors from 94 to 87 words (offline: 79), for later
    # commits (median word 0.3 s later at 1x on a slow day); on its five sets (579 words, offline 60
    # errors) a cold span of 2.0 s rather than 1.2 s cuts them from 67 to 57 (harbor's openings; 0890's
    # "Unless", heard as "I'd like" from 1.8 to 3.3 s of audio, then as "Unless" again). Spans, not
    # counts, so that a stream decoded less often under load commits on the same evidence.
    agree_span: float = 0.25
    unlikely_span: float = 0.9
    cold_span: float = 2.0
    commit_probability: float = 0.6
    commit_margin: float = 0.3  # ... and that end at least this long before the audio decoded
    first_commit_audio: float = 1.5  # an utterance's first words wait for this much audio (more context)
    max_window: float = 24.0  # longer uncommitted speech forces a commit (the model sees at most 30 s)
    trim_after: float = 12.0  # committed audio kept in the window before it moves to the prompt
    # An utterance's window begins with the earlier utterances that ended at most ``carry_gap`` seconds
    # before it and began at most ``carry_seconds`` before it, their committed words forced as the
    # prefix: tiny.en hears a sentence better after the speech before it (as offline, where a 30 s window
    # holds several), not only its text as the prompt. A decode that hears under
    # ``carry_min_words_per_second`` of the utterance's own voiced audio, or loops, after carried words,
    # once ``carry_min_voice`` of it is voiced, is taken to be misled by them: it is done again without them.
    carry_gap: float = 2.0  # 0: every utterance is decoded alone
    carry_seconds: float = 12.0
    carry_min_words_per_second: float = 0.6
    # Before ``carry_min_voice`` seconds of the utterance's own voice, a decode is not judged misled: one that
    # loops after the carried words (the model says the last carried sentence again over the first syllables
    # of the next) waits for more audio with them. Decoded alone instead, 0890's "Unless", heard without the
    # sentence before it, was "I'd less" in most hypotheses and waited 3.7-4.4 s. bench/replay.py
    # --sets librivox+cards+harbor --phases 0,0.1,0.2: --cost 0.1, 86 streamed errors against 95 (0: loops
    # always drop the carry), committed p90 1.20 s against 1.21 s; --cost 0.2, 86 against 96, p90 1.31 s
    # against 1.32 s; five sets (--cost 0.2), 215 against 220.
    carry_min_voice: float = 1.0
    vad_aggressiveness: int = 2
    pre_roll_ms: int = 250
    # An utterance ends after 300 ms without voice: its last words are committed 0.2 s sooner than
    # after 500 ms, and the pauses it then ends at are bridged by the carry (bench/streaming.py inline:
    # 59 streamed errors against 67 with 500 ms, offline 60, of 579 words).
    hangover_ms: int = 300
    condition_on_previous_text: bool = True
    prompt_tokens: int = 96
    initial_prompt: tuple[int, ...] = ()
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    compression_ratio_threshold: float = 2.4
    fallback_temperatures: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
    # An utterance's final decode (at temperature 0), which commits the words the partial decodes have
    # not agreed on, searches this many beams (None: greedy). bench/streaming.py inline (5 sets, 579
    # words, int8): 79 streamed errors greedy, 73 with 3 beams, 67 with 5 (offline greedy: 60), for
    # ~1.3-1.8x the final decode's time (bench/final_decode.py).
    final_beam_size: int | None = 5
    # A word the hypotheses still have not settled ``max_hold`` seconds after it ended (they keep hearing it,
    # or a word before it, differently: "mended nets", "mended, it's", "mendedness" in turn) is settled by
    # a decode like the final one (its beam search, no draft), which commits the words that end
    # ``hold_margin`` before the audio it heard. Agreement alone held whole sentences behind one
    # knife-edge word until the utterance ended (5-7 s). bench/replay.py --phases 0,0.2 (five sets, 2 x
    # 579 words): committed median/p90 0.82-0.89/1.62-1.93 s against 0.87-1.01/2.36-2.53 s without, 124
    # streamed errors against 143. Two hypotheses must disagree first, over an utterance that has
    # committed words of its own (openings: see majority_hold): settling any opening gave p90 1.46-1.50 s, but
    # lost a quiet opening "And" (a 1.0 s hold: p90 1.23 s, and 76 errors against 64 at offset 0).
    max_hold: float | None = 1.5  # None: such words wait for agreement or for the utterance's end
    hold_margin: float = 0.5
    # Majority: a word the hypotheses still dispute ``majority_hold`` after it ended (the newest one's first
    # not committed) is committed, with the words before and after it, as most of the hypotheses of the
    # last ``cold_span`` have it: at least ``majority_voters`` of them, the newest among them, so not in a
    # stream decoded seldom (under load, or faster than real time). An utterance's opening is settled
    # instead by a settling decode that commits what both its beams and most hypotheses begin with (tried
    # again ``max_hold`` later if the beams began otherwise: harbor's contested "Fisherman" then held its
    # sentence 3-6 s, one stream's committed p90 2.09-2.35 s with int8_bfloat16, 1.47-2.24 s with the retry):
    # 0870's quiet "And", in 15 of 21 hypotheses, held the sentence 4-6.5 s, while most of 0890's heard
    # "I'd less" for "Unless", which the beams (and the final) keep. bench/replay.py --phases 0,0.1,0.2:
    # 196 streamed errors against 195 without (majority_hold=None), committed p90 1.57/1.45/1.48 s
    # against 1.77/1.60/1.79 s; a majority of partial decodes for openings too, 195 errors and p90
    # 1.48/1.43/1.46 s, but "I'd less" in 0890 (an accuracy test on two of CI's three kernel sets).
    majority_hold: float | None = 1.0  # None: no majority rule
    majority_voters: int = 4
    # An opening still disputed, with no majority, ``opening_hold`` after its first word ended (0890's
    # "Unless to be rather cold-hearted", heard as "I'd less", "I'm blessed" and "Unless" in turn; live with
    # int8_bfloat16, harbor's "Fishermen had waited", held 6 s) is settled by what a settling decode hears.
    # bench/replay.py, committed p90 and streamed errors: five sets --phases 0,0.1,0.2, int8 1.47 -> 1.46 s
    # (194 errors either way), int8_bfloat16 1.49 -> 1.48 s (195); --sets librivox+cards+harbor, int8 1.53
    # -> 1.48 s (90 -> 95 errors, as committing other words changed the prefixes after them: 2.0 s gave 99,
    # 2.5 s 95), int8_bfloat16 --cost 0.15 --phases 0,0.1 1.43 -> 1.28 s (54 -> 55). Live, 1 client
    # (bench/load.py, 4 runs): int8_bfloat16 1.27-1.59 s (1.47-2.35 s before), int8 1.32-1.52 s (1.33-1.54
    # s); "Fishermen" waited 3 s.
    opening_hold: float | None = 3.0
    # A settling decode whose beams begin a disputed opening otherwise than most hypotheses commits nothing; it
    # is tried again ``opening_retry`` later, and two in a row commit what both begin with unless a recent
    # hypothesis heard a first word before them that the beams drop (0870's "And"); None: tried again
    # ``max_hold`` later, and two that agree commit nothing (the rule before this one). Harbor's "One of the
    # boats", heard so by the beams and as "Well, the boats" by most partial decodes, waited for the opening
    # hold: 4.9 s for "had" (live, 1 client). bench/replay.py --cost 0.2 --phases 0,0.1,0.2: five sets 215
    # streamed errors either way, committed p90 1.36 s against 1.37 s (None); librivox+cards+harbor 86 errors
    # against 84, p90 1.31 s against 1.41 s.
    opening_retry: float | None = 0.6
    # Disputed openings are settled from ``max_hold`` after their first word ended too, by settling decodes alone
    # (two that agree, as above; or one that agrees with a majority), not only once most hypotheses agree or
    # the opening hold has passed: a stream decoded every 0.6 s or more (under load) has fewer hypotheses in
    # the cold span than a majority needs, and its openings waited for the opening hold (6 clients, harbor's
    # "Fishermen had waited" 2-6 s late). bench/replay.py --sets librivox+cards+harbor: --cost 0.45 --phases
    # 0,0.15,0.3, 81 streamed errors against 86, committed p90 1.87 s against 1.95 s; --cost 0.2 --phases
    # 0,0.1,0.2, 82 against 86, p90 1.31 s either way; five sets (--cost 0.2), 212 against 215, p90 1.36 s.
    settle_openings: bool = True
    max_tokens_per_second: float = 8.0
    min_word_probability: float = 0.1  # a hypothesis whose every word is less likely is noise
    # AlignAtt: a word this likely, which the alignment heads place this long before the end of the
    # audio decoded, is committed from one hypothesis (no need to wait for the next to agree)
    align_probability: float = 0.9
    align_margin: float = 0.7
    voice_margin: float = 0.2  # a word is over speech if the VAD heard voice within this of it
    buffer_seconds: float = 60.0
    # A partial decode's encoder computes the window's audio and ``encoder_margin`` seconds after it only, rounded up
    # to whole ``encoder_step`` seconds (a few sizes of buffers then serve every window: with a size per window the
    # heap grew 60 MB in 30 s of speech); the other positions of the 30 s window take the states of a window of
    # silence (``Engine.silence``), to which the computed ones attend. The decoder still sees Whisper's 30 s window
    # (an encoder window cut to the audio plus 4 s, whisper.cpp's audio_ctx, made 187 streamed errors against 178 in
    # bench/streaming.py --speed 0 --sets harbor,workshop,garden --phases 0,0.1,0.2), and the encoder's cost follows
    # the audio: 19, 30, 51 and 87 ms for 2, 5, 10 and 20 s against 121-129 ms (2 cores, tiny.en int8,
    # bench/decode.py). bench/replay.py --phases 0, 0.1, 0.2 (five sets, 579 words each): 60, 58 and 70 streamed
    # errors (188) against 59, 76 and 61 (196) with the whole window (None). Settling and final decodes, which commit
    # what they hear, compute the whole window (computed in part too, cards' final lost 4 words). Their audio and 2 s
    # after it made the daemon faster with 6 streams on 2 cores (bench/load.py, committed p90 1.81-2.08 s over five
    # runs against 2.19-2.60 s over seven), but a final decode after the committed "He was not an" heard 0880's
    # "ill-disposed" as "old supposed" in 20 of 25 random decode timings (margin 4 or 8 s: 8 of 10), against 0 of 25
    # with the whole window.
    encoder_margin: float | None = 0.5
    encoder_step: float = 1.0
    draft: bool = True  # partial decodes check the last hypothesis as a draft (the same text, found faster)

    def encoder_heard(self, audio_seconds: float) -> float | None:
        """How many seconds of a partial decode's window of ``audio_seconds`` the encoder computes."""
        if self.encoder_margin is None:
            return None
        return min(30.0, math.ceil((audio_seconds + self.encoder_margin) / self.encoder_step) * self.encoder_step)


@dataclass(frozen=True)
class WindowJob:
    id: int
    start: int  # absolute sample of audio[0]
    audio: np.ndarray  # float32, 16 kHz, at most 30 s: a read-only view of the session's ring, which keeps
    # the audio of its job in flight (appends never reach retained samples)
    prompt: tuple[int, ...]
    prefix: tuple[int, ...]  # the committed tokens of this window, forced
    language: str | None
    task: str
    temperature: float
    sample_len: int
    final: bool  # the utterance ended at the window's end: commit everything
    encoder_heard: float | None = None  # seconds of the window the encoder computes (None: all of it)
    draft: tuple[int, ...] = ()  # the tokens the last hypothesis had after the prefix (a decoding draft)
    align_from: float = 0.0  # seconds into the window where the committed words end (new words come after)
    beam_size: int | None = None  # beam search rather than greedy decoding (at temperature 0)
    settle: bool = False  # a settling decode: it commits what it hears ``hold_margin`` before its end

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


_job_ids = itertools.count()


@dataclass(frozen=True)
class Carried:
    start: int  # absolute sample where the utterance's window began
    words: tuple[Word, ...]  # its committed words


@dataclass(frozen=True)
class Hypothesis:
    end: float  # seconds of stream audio the decode heard
    words: tuple[Word, ...]  # its words after the committed ones


class StreamSession:
    def __init__(self, config: StreamConfig | None = None):
        self.config = config = config or StreamConfig()
        self.vad = VadSegmenter(
            config.vad_aggressiveness, pre_roll_ms=config.pre_roll_ms, hangover_ms=config.hangover_ms,
            history_s=2 * config.buffer_seconds,
        )
        self.ring = RingBuffer(int(config.buffer_seconds * SAMPLE_RATE), RING_INITIAL_SECONDS * SAMPLE_RATE)
        self._cut = 0  # the sample of the last finalize(): no speech segment begins before it
        self.language = config.language
        self._segments: deque[list[int | None]] = deque()  # [start, end or None] of speech, oldest first
        self._window_start: int | None = None
        self._committed: list[Word] = []  # committed words of the current window (its forced prefix)
        # Earlier utterances the window begins with (their words lead ``_committed``); between utterances,
        # the last ones, waiting for the next speech; ``_carry_end``: the sample where they ended.
        self._carry: list[Carried] = []
        self._carry_end = 0
        self._own_start = 0  # the sample where the current utterance's own audio begins in the window
        self._history: deque[Hypothesis] = deque(maxlen=16)  # this utterance's recent hypotheses, newest last
        self._openings: set[str] = set()  # first words the utterance's hypotheses began with, until a commit
        # when a settling decode last tried the disputed opening (seconds), and what it heard
        self._opening_try: tuple[float, tuple[Word, ...]] | None = None
        self._last_job_end = 0
        self._in_flight: WindowJob | None = None
        self._attempts: list[tuple[DecodingResult, int | None]] = []  # a final's tries: result, loop start
        self._context: deque[int] = deque(config.initial_prompt, maxlen=config.prompt_tokens)
        self._partial: tuple[Word, ...] = ()
        self._last_end = 0.0  # end of the last committed word, seconds
        self.committed_words = 0

    # -- audio in -----------------------------------------------------------------------------------

    @property
    def time(self) -> float:
        """Seconds of audio received."""
        return self.ring.end / SAMPLE_RATE

    @property
    def busy(self) -> bool:
        """Speech is buffered that has not been committed, or a job is out."""
        return bool(self._segments) or self._in_flight is not None

    def undecoded_before(self, t: float) -> bool:
        """Speech that began before stream time ``t`` is not all decoded and committed yet."""
        sample = int(round(t * SAMPLE_RATE))
        return any((start or 0) < sample for start, _ in self._segments)

    def feed(self, samples: np.ndarray) -> list[Event]:
        """Take 16 kHz mono float32 samples; returns the speech boundaries they complete."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._trim()
        try:
            self.ring.append(samples)
        except BufferFull:
            raise StreamerError(
                f"transcription fell {self.config.buffer_seconds:.0f} s behind the audio; the machine is overloaded"
            ) from None
        events: list[Event] = []
        for boundary in self.vad.feed(samples):
            self._boundary(boundary)
            events.append(boundary)
        return events

    def _boundary(self, event: SpeechStart | SpeechEnd) -> None:
        if isinstance(event, SpeechStart):
            self._segments.append([max(event.sample, self.ring.start, self._cut), None])
            if self._window_start is None:
                self._open_window()
        elif self._segments and self._segments[-1][1] is None:
            self._segments[-1][1] = max(event.sample, self._segments[-1][0] or 0)

    def finalize(self) -> None:
        """Commit everything heard so far as soon as it is decoded (speech going on continues after). The
        cut is hard: speech heard later does not reach back across it (with the VAD's pre-roll)."""
        self._cut = self.ring.end
        if self._window_start is None:
            self._release_carry()
        if self._segments and self._segments[-1][1] is None:
            self._segments[-1][1] = self.ring.end
            if self.vad.in_speech:
                self._segments.append([self.ring.end, None])

    def flush(self) -> list[Event]:
        """End of the stream: close open speech; the caller then runs jobs until ``busy`` is false."""
        events: list[Event] = []
        for boundary in self.vad.flush():
            self._boundary(boundary)
            events.append(boundary)
        return events

    @property
    def _carried(self) -> int:
        """How many leading words of the window's committed words are earlier utterances'."""
        return sum(len(c.words) for c in self._carry) if self._window_start is not None else 0

    @property
    def _fresh(self) -> bool:
        """Nothing of the current utterance's own is committed yet (carried words do not count)."""
        return len(self._committed) == self._carried

    def _open_window(self) -> None:
        """The oldest speech segment begins a window, after the earlier utterances it may carry."""
        start = self._segments[0][0]
        assert start is not None
        config = self.config
        gap_ok = start - self._carry_end <= config.carry_gap * SAMPLE_RATE
        earliest = max(start - config.carry_seconds * SAMPLE_RATE, self._cut, self.ring.start)
        keep = [c for c in self._carry if gap_ok and c.start >= earliest]  # a suffix: starts increase
        self._release_carry(len(self._carry) - len(keep))
        self._carry = keep
        self._window_start = keep[0].start if keep else start
        self._own_start = start
        self._committed = [w for c in keep for w in c.words]

    def _release_carry(self, n: int | None = None) -> None:
        """The first ``n`` (default all) carried utterances leave the window: their words become prompt."""
        n = len(self._carry) if n is None else n
        for c in self._carry[:n]:
            self._context.extend(t for w in c.words for t in w.tokens)
        del self._carry[:n]

    def _uncarry_oldest(self) -> None:
        """The oldest carried utterance leaves the window."""
        del self._committed[: len(self._carry[0].words)]
        self._release_carry(1)
        self._window_start = self._carry[0].start if self._carry else self._own_start

    def _drop_carry(self) -> None:
        """The utterance is decoded alone from now on: the carried words are prompt again."""
        carried = self._carried
        self._release_carry()
        del self._committed[:carried]
        self._window_start = self._own_start
        self._last_job_end = self._own_start  # the same audio is due again at once
        self._history.clear()
        self._attempts.clear()

    def _own_voiced(self, job: WindowJob) -> float:
        """Seconds of voice the VAD heard in the utterance's own audio of ``job``."""
        return self.vad.voiced_seconds(self._own_start, job.end)

    def _misled_by_carry(self, job: WindowJob, result: DecodingResult, loop_at: int | None) -> bool:
        voiced = self._own_voiced(job)
        heard = len(self._committed) - self._carried + len(self._new_words(job, result, loop_at))
        return voiced >= self.config.carry_min_voice and heard < self.config.carry_min_words_per_second * voiced

    def _trim(self) -> None:
        idle = self._window_start is None
        if idle and self._carry and self.ring.end - self._carry_end > self.config.carry_gap * SAMPLE_RATE:
            self._release_carry()  # the pause is too long to carry them into the next utterance
        if self._window_start is not None:
            keep = self._window_start
        elif self._segments:
            keep = self._segments[0][0] or 0
        elif self._carry:
            keep = self._carry[0].start
        else:  # idle: keep enough for the VAD's pre-roll
            keep = self.ring.end - SAMPLE_RATE
        if self._in_flight is not None:  # its audio is a view of the ring
            keep = min(keep, self._in_flight.start)
        self.ring.trim(min(max(self.ring.start, keep), self.ring.end))

    # -- jobs out -----------------------------------------------------------------------------------

    def due(self) -> bool:
        """A decode is due: ``next_job`` would return a job now (it changes nothing)."""
        if self._in_flight is not None or not self._segments:
            return False
        config = self.config
        seg_start, seg_end = self._segments[0]
        if seg_end is not None:  # the utterance has ended: its final decode
            return True
        if len(self._segments) > 1:  # cannot happen: only the newest segment is open
            return False
        start = self._window_start if self._window_start is not None else seg_start
        assert start is not None
        end = self.ring.end
        if self._carried and end - start > config.max_window * SAMPLE_RATE:
            return True  # the carried words leave, and the utterance's own audio is decoded again at once
        new_audio = end - max(self._last_job_end, start)
        return new_audio >= config.interval * SAMPLE_RATE and end - start >= config.min_audio * SAMPLE_RATE

    def final_due(self) -> bool:
        """The utterance has ended and its final decode, which commits its last words, is still to be made."""
        return self._in_flight is None and bool(self._segments) and self._segments[0][1] is not None

    def next_job(self) -> WindowJob | None:
        """The decode to run now, if any (one at a time per session)."""
        if self._in_flight is not None or not self._segments:
            return None
        config = self.config
        seg_start, seg_end = self._segments[0]
        start = self._window_start if self._window_start is not None else seg_start
        assert start is not None
        self._window_start = start
        final = seg_end is not None
        end = seg_end if seg_end is not None else self.ring.end
        if self._carried and end - start > config.max_window * SAMPLE_RATE:  # no room for the carried words
            self._drop_carry()
            start = self._own_start
        if not self.due():
            return None
        if end - start > N_SAMPLES:  # never more than the model's 30 s: commit by force first
            end, final = start + N_SAMPLES, False
        temperatures = (0.0, *config.fallback_temperatures)
        temperature = temperatures[min(len(self._attempts), len(temperatures) - 1)] if final else 0.0
        prefix = tuple(t for w in self._committed for t in w.tokens)
        seconds = (end - start) / SAMPLE_RATE
        sample_len = max(8, int(10 + config.max_tokens_per_second * seconds) - len(prefix))
        prompt = tuple(self._context) if config.condition_on_previous_text else tuple(config.initial_prompt)
        draft: tuple[int, ...] = ()
        # Not for the final decode, which commits the rest of the utterance: a draft is checked in one
        # pass over all its tokens, and int8 linears quantise a pass's activations with one scale, so
        # the logits differ a little from a token-by-token decode; the committing decode is the one that
        # must match offline transcription ("ill-disposed", not "old-sposed", on knife-edge words).
        settle = not final and self._held_too_long(end)
        if config.draft and temperature == 0 and self._history and not final and not settle:
            draft = tuple(t for w in self._history[-1].words for t in w.tokens)
        job = WindowJob(
            id=next(_job_ids), start=start, audio=self.ring.view(start, end), prompt=prompt, prefix=prefix,
            language=self.language, task=config.task, temperature=temperature, sample_len=sample_len, final=final,
            draft=draft, encoder_heard=None if final or settle else config.encoder_heard(seconds),
            align_from=max(0.0, self._last_end - start / SAMPLE_RATE),
            beam_size=config.final_beam_size if (final or settle) and temperature == 0 else None, settle=settle,
        )
        self._in_flight = job
        self._last_job_end = end
        return job

    def _held_too_long(self, end: int) -> bool:
        """Two hypotheses or more have not settled on the last one's first word (the oldest not committed),
        which ended ``max_hold`` or more before sample ``end``, and the utterance has committed words of its
        own. (One hypothesis is no disagreement: a stream decoded seldom, under load, waits for a second as
        before.) An utterance's opening is settled when most hypotheses agree on it (``_opening_vote``), again
        ``max_hold`` after a settling decode that committed nothing (its beams began otherwise)."""
        hold = self.config.max_hold
        if hold is None or len(self._history) < 2 or not self._history[-1].words:
            return False
        now = end / SAMPLE_RATE
        if self._fresh:
            tried = self._opening_try
            retry = hold if self.config.opening_retry is None else self.config.opening_retry
            if tried is not None and round(now - tried[0], 3) < retry:  # (to the ms: 3.3 - 2.4 < 0.9 in floats)
                return False
            if self.config.settle_openings and len(self._openings) > 1 and now - self._history[-1].words[0].end >= hold:
                return True  # settling decodes alone may settle it (two that agree: _settles_agree)
            return self._opening_vote(now) > 0 or self._opening_overdue(now, self._history[-1].words)
        return now - self._history[-1].words[0].end >= hold

    def _opening_overdue(self, now: float, words: Sequence[Word]) -> bool:
        """The hypotheses have begun the utterance differently, no first word in most of them, until
        ``opening_hold`` or more after its first word, as ``words`` has it, ended, in a stream decoded often
        (two hypotheses in the last ``cold_span``): a settling decode then commits what it hears."""
        config = self.config
        if config.opening_hold is None or len(self._openings) < 2 or not words:
            return False
        recent = self._recent(now)
        firsts = Counter(word_key(h[0].word) for h in recent if h)
        if firsts and 2 * max(firsts.values()) > len(recent):  # most begin alike: the beams must agree
            return False  # (0870's quiet "And", in most hypotheses, which a beam search over it dropped)
        return len(recent) >= 2 and now - words[0].end >= config.opening_hold

    def _settles_agree(self, now: float, words: Sequence[Word]) -> int:
        """How many leading words of ``words`` (a settling decode's) the settling decode before it, over the
        same disputed opening, began with too; 0 where a recent hypothesis has them after a first word of its
        own, which the beams drop (0870's quiet "And", in most hypotheses, which a beam search over it dropped)."""
        if self.config.opening_retry is None or self._opening_try is None:
            return 0
        n = agreed_prefix(self._opening_try[1], words)
        if n and any(len(h) > 1 and agreed_prefix(h[1:], words) >= min(2, n) for h in self._recent(now)):
            return 0
        return n

    def _recent(self, now: float) -> list[tuple[Word, ...]]:
        """The words of the hypotheses of the last ``cold_span`` before ``now``, oldest first."""
        return [h.words for h in self._history if h.end >= now - self.config.cold_span]

    def _opening_vote(self, now: float, words: Sequence[Word] | None = None) -> int:
        """``_majority`` for an opening whose hypotheses have begun differently; 0 for any other."""
        return self._majority(now, words) if len(self._openings) > 1 else 0

    def _majority(self, now: float, words: Sequence[Word] | None = None) -> int:
        """How many leading words of ``words`` (default: the newest hypothesis) begin most of the
        hypotheses of the last ``cold_span`` before ``now``, once the first of them ended ``majority_hold``
        before ``now``; 0 if none."""
        config = self.config
        if config.majority_hold is None:
            return 0
        recent = self._recent(now)
        if words is None:  # the newest hypothesis, if it is that recent (a stream may be decoded seldom)
            if not recent:
                return 0
            words, recent = recent[-1], recent[:-1]
        if not words or words[0].end > now - config.majority_hold:
            return 0
        return majority_prefix(recent, words, config.majority_voters)

    # -- results in ---------------------------------------------------------------------------------

    def complete(self, job: WindowJob, result: DecodingResult) -> list[Event]:
        """Take the decode of ``job``; returns the final and partial events it yields."""
        if job is not self._in_flight:
            raise ValueError("complete() got a job that is not this session's job in flight")
        self._in_flight = None
        if self.language is None:
            self.language = result.language
        config = self.config
        context = job.prefix[-32:]
        loop = find_loop((*context, *result.tokens), fresh_from=len(context))
        loop_at = None if loop is None else loop - len(context)  # index into the sampled tokens
        capped = len(result.tokens) >= job.sample_len
        silent = result.no_speech_prob > config.no_speech_threshold and result.avg_logprob < config.logprob_threshold
        doubtful = (
            loop_at is not None
            or capped
            or result.compression_ratio > config.compression_ratio_threshold
            or result.avg_logprob < config.logprob_threshold
        )
        misled = self._carried and not silent and (loop_at is not None or self._misled_by_carry(job, result, loop_at))
        if misled:
            if loop_at is not None and not job.final and self._own_voiced(job) < config.carry_min_voice:
                return []  # so little of the utterance yet that the model repeats what it follows: hear more
            self._drop_carry()
            return []  # decode again without the carried words
        if loop_at is not None:
            self._context.clear()  # a loop is often primed by the prompt
        if job.final:
            self._attempts.append((result, loop_at))
            if doubtful and not silent and len(self._attempts) <= len(config.fallback_temperatures):
                return []  # decode again, hotter (next_job)
            result, loop_at = self._best_attempt()
            self._attempts.clear()
        if not job.final and doubtful and loop_at is None and not silent:
            return []  # an unreliable decode mid-utterance: keep what we have, wait for the next one
        words = [] if silent else self._new_words(job, result, loop_at)
        if words and max(w.probability for w in words) < config.min_word_probability:
            words = []
        if job.final:
            return self._commit_utterance(job, words)
        return self._commit_agreed(job, words)

    def _best_attempt(self) -> tuple[DecodingResult, int | None]:
        """The final's attempt to commit, and where to cut its tokens (None: nowhere): the likeliest clean
        one (no loop, not too repetitive) that is also likely enough; when none is, the greedy one, cut
        after the tokens most attempts begin with. Sampled text that is no likelier than the greedy
        text is no better evidence, and on noise it invents phrases: a minute of pink noise, heard as
        "You." (greedy, its word under ``min_word_probability``), "The", then "Thanks for watching." at
        0.4, which the likeliest attempt committed. Nor is greedy text that no sample agrees with: on an
        AMD EPYC's kernels the same noise was "I'm going to take a look" (greedy), then "You", "It's a
        really good one", "It's the look" and "sky", and the greedy attempt committed "I'm". (A sample at a
        low temperature often begins as the greedy text does: one agreeing attempt is not enough.)"""
        config = self.config
        clean = [
            (r, loop) for r, loop in self._attempts
            if loop is None and r.compression_ratio <= config.compression_ratio_threshold
            and r.avg_logprob >= config.logprob_threshold
        ]
        if clean:
            return max(clean, key=lambda a: a[0].avg_logprob)
        greedy, loop_at = self._attempts[0]
        if len(self._attempts) == 1:  # no fallback temperatures, or a silent window
            return greedy, loop_at
        shared = sorted((shared_tokens(greedy.tokens, r.tokens) for r, _ in self._attempts[1:]), reverse=True)
        agreed = shared[len(self._attempts) // 2 - 1]  # the tokens that most attempts, the greedy one too, begin with
        return greedy, agreed if loop_at is None else min(loop_at, agreed)

    def _new_words(self, job: WindowJob, result: DecodingResult, loop_at: int | None) -> list[Word]:
        """The result's words (those decoded after the forced prefix), in stream seconds, cut where a loop
        starts."""
        timings = result.words or []
        offset = job.start / SAMPLE_RATE
        words: list[Word] = []
        count = 0
        floor = self._last_end
        audio_end = job.end / SAMPLE_RATE
        for w in timings:
            count += len(w.tokens)
            if loop_at is not None and count > loop_at:
                break
            start = max(round(offset + w.start, 3), floor)
            end = max(round(offset + w.end, 3), start)
            if start >= audio_end - 0.1:  # too close to the end of the audio to have been said in it
                break
            words.append(Word(w.word, start, end, w.probability, w.tokens))
            floor = end
        return words

    def _over_speech(self, word: Word) -> bool:
        margin = self.config.voice_margin
        a = int((word.start - margin) * SAMPLE_RATE)
        b = int((word.end + margin) * SAMPLE_RATE)
        return self.vad.voiced_seconds(a, b) > 0.0

    def _commit(self, words: Sequence[Word], closes: bool = False) -> list[Event]:
        if not words:
            return []
        self._openings.clear()
        self._opening_try = None
        self._committed.extend(words)
        self._last_end = words[-1].end
        self.committed_words += len(words)
        return [Final(tuple(words), closes)]

    def _show(self, tail: Sequence[Word]) -> list[Event]:
        tail = tuple(tail)
        if not self.config.partials or [w.word for w in tail] == [w.word for w in self._partial]:
            self._partial = tail
            return []
        self._partial = tail
        return [Partial(tail)]

    def _commit_utterance(self, job: WindowJob, words: list[Word]) -> list[Event]:
        events = self._commit([w for w in words if self._over_speech(w)], closes=True)
        events += self._show(())
        events.append(UtteranceEnd(job.end / SAMPLE_RATE))
        own = tuple(self._committed[self._carried :])
        if own:  # the utterance waits to be carried into the next one's window
            self._carry.append(Carried(self._own_start, own))
        self._carry_end = job.end
        if self.config.carry_gap <= 0:
            self._release_carry()
        self._committed.clear()
        self._history.clear()
        self._openings.clear()
        self._opening_try = None
        self._segments.popleft()
        self._window_start = None
        if self._segments:
            self._open_window()
        self._last_job_end = job.end
        return events

    def _settled(self, job: WindowJob, words: list[Word]) -> int:
        """How many leading words are settled enough to commit, by agreement or by alignment."""
        config = self.config
        audio_end = job.end / SAMPLE_RATE
        # For each word, how long before this decode the oldest hypothesis lies from which every one to
        # this agrees on the words up to it (0 if even the last one disagrees).
        spans = [0.0] * len(words)
        agreed = len(words)
        for h in reversed(self._history):
            agreed = min(agreed, agreed_prefix(h.words, words))
            if agreed == 0:
                break
            for i in range(agreed):
                spans[i] = audio_end - h.end
        fresh = self._fresh
        if words and fresh:
            self._openings.add(word_key(words[0].word))
        contested = fresh and len(self._openings) > 1
        unlikely = config.cold_span if contested else config.unlikely_span
        n = 0
        for w, span in zip(words, spans, strict=True):
            need = config.agree_span if w.probability >= config.commit_probability else unlikely
            # AlignAtt: a confident word that the alignment heads place well before the end of the audio.
            aligned = w.probability >= config.align_probability and w.end <= audio_end - config.align_margin
            if not ((span > 0 and span >= need) or aligned):
                break
            n += 1
        return n

    def _commit_agreed(self, job: WindowJob, words: list[Word]) -> list[Event]:
        config = self.config
        n = self._settled(job, words)
        audio_end = job.end / SAMPLE_RATE
        fresh = self._fresh
        if not fresh:
            n = max(n, self._majority(audio_end, words))
        if job.settle:  # what the settling decode hears well before the end of its audio ...
            heard = ending_by(words, audio_end - config.hold_margin)
            if fresh:  # ... and, of an opening, what most hypotheses begin with too
                if not self._opening_overdue(audio_end, words):
                    heard = min(heard, max(self._opening_vote(audio_end, words), self._settles_agree(audio_end, words)))
                self._opening_try = (audio_end, tuple(words))
            n = max(n, heard)
        forced = job.end - self._own_start > config.max_window * SAMPLE_RATE
        if forced:  # too long uncommitted: commit all but the words of the last second
            n = max(n, ending_by(words, audio_end - 1.0))
        if self._fresh and job.end - self._own_start < config.first_commit_audio * SAMPLE_RATE:
            n = 0
        margin_end = audio_end - config.commit_margin
        while n > 0 and words[n - 1].end > margin_end:
            n -= 1
        if 0 < n == len(words) and not forced and words[-1].word.rstrip()[-1:] in ".?!,;:":
            n -= 1  # punctuation at the very end of the audio is often premature: let it settle
        committed: list[Word] = []
        for w in words[:n]:
            if not self._over_speech(w):
                break
            committed.append(w)
        events = self._commit(committed)
        tail = words[len(committed) :]
        self._rebase_history(committed)
        self._history.append(Hypothesis(audio_end, tuple(tail)))
        self._forget_old_hypotheses(audio_end)
        events += self._show(tail)
        if forced and not committed:  # the model hears no words in a long window: let its older part go
            self._window_start = self._own_start = max(self._own_start, job.end - SAMPLE_RATE)
            self._history.clear()
        # Too much committed audio in the window: carried utterances leave first (a cut at an utterance's
        # start), then the window begins after the last committed word.
        while self._carry and self._committed[-1].end - self._carry[0].start / SAMPLE_RATE > config.trim_after:
            self._uncarry_oldest()
        if self._committed and self._committed[-1].end - self._own_start / SAMPLE_RATE > config.trim_after:
            self._context.extend(t for w in self._committed for t in w.tokens)  # no carried words are left
            self._committed.clear()
            self._window_start = self._own_start = max(self._own_start, int(self._last_end * SAMPLE_RATE))
            self._history.clear()
        return events

    def _rebase_history(self, committed: Sequence[Word]) -> None:
        """Words were committed: each kept hypothesis loses them from its front, and one that said
        otherwise is dropped (it no longer supports anything after them)."""
        if not committed:
            return
        kept = [
            Hypothesis(h.end, h.words[len(committed) :])
            for h in self._history
            if agreed_prefix(h.words, committed) == len(committed)
        ]
        self._history.clear()
        self._history.extend(kept)

    def _forget_old_hypotheses(self, now: float) -> None:
        """Hypotheses older than the longest span a rule looks back over are no longer needed (the
        newest older one is kept: it is what a span reaches back to)."""
        horizon = now - max(self.config.agree_span, self.config.unlikely_span, self.config.cold_span)
        while len(self._history) > 2 and self._history[1].end <= horizon:
            self._history.popleft()
