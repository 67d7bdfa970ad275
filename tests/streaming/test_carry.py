"""Carrying an utterance into the next one's window: the speech before a short pause is heard again, its
committed words forced as the prefix; a decode they mislead is done again without them."""

from __future__ import annotations

import numpy as np

from streamer import SAMPLE_RATE
from streamer.streaming.inference import run_windows
from streamer.streaming.session import StreamConfig, StreamSession, WindowJob
from tests.streaming.conftest import SENSE, joined

CHUNK = SAMPLE_RATE // 10


def drive(engine, session: StreamSession, audio: np.ndarray) -> list[WindowJob]:
    """Feed ``audio`` in 100 ms chunks, running every job due; returns the jobs in order."""
    jobs = []
    for i in range(0, len(audio), CHUNK):
        session.feed(audio[i : i + CHUNK])
        while (job := session.next_job()) is not None:
            jobs.append(job)
            session.complete(job, run_windows(engine, [job])[0])
    return jobs


def first_utterance(engine, gap: float, config: StreamConfig | None = None):
    """A session that has heard and committed SENSE[0] and then ``gap`` seconds of silence."""
    session = StreamSession(config)
    audio = np.concatenate([joined(SENSE[:1], gap=0.0), np.zeros(int(gap * SAMPLE_RATE), np.float32)])
    jobs = drive(engine, session, audio)
    assert jobs[-1].final and not session.busy
    return session, jobs[0].start, len(audio)


def carried_decode(engine, seconds: float):
    """A session that has committed SENSE[0] and then, 1 s later, heard the first ``seconds`` of SENSE[1];
    its job (a window that begins with the first utterance, its words forced) and the real decode of it."""
    session, first_start, heard = first_utterance(engine, 1.0)
    second = joined(SENSE[1:2], gap=0.0)[: int(seconds * SAMPLE_RATE)]
    for i in range(0, len(second), CHUNK):
        session.feed(second[i : i + CHUNK])
    job = session.next_job()
    assert job is not None and job.start == first_start and job.prefix
    result = run_windows(engine, [job])[0]
    assert result.words
    return session, heard, job, result


def test_speech_after_a_short_pause_is_decoded_after_the_utterance_before(engine):
    session, first_start, _ = first_utterance(engine, 1.0)
    jobs = drive(engine, session, joined(SENSE[1:2], gap=0.0)[: 3 * SAMPLE_RATE])
    assert jobs
    carried = tuple(t for w in session._carry[0].words for t in w.tokens)
    assert carried
    assert all(job.start == first_start for job in jobs)
    assert all(job.prefix[: len(carried)] == carried for job in jobs)


def test_speech_after_a_long_pause_is_decoded_alone(engine):
    session, _, heard = first_utterance(engine, 3.0)
    jobs = drive(engine, session, joined(SENSE[1:2], gap=0.0)[: 3 * SAMPLE_RATE])
    assert jobs and jobs[0].prefix == ()
    assert all(job.start >= heard - SAMPLE_RATE // 2 for job in jobs)  # the window begins at the new speech


def test_without_carrying_every_utterance_is_decoded_alone(engine):
    session, _, heard = first_utterance(engine, 1.0, StreamConfig(carry_gap=0.0))
    jobs = drive(engine, session, joined(SENSE[1:2], gap=0.0)[: 3 * SAMPLE_RATE])
    assert jobs and jobs[0].prefix == ()
    assert all(job.start >= heard - SAMPLE_RATE // 2 for job in jobs)  # the window begins at the new speech


def test_a_decode_that_hears_nothing_after_carried_words_is_done_again_without_them(engine):
    """Fed a real decode with its new words taken away: 2 s of voice after the carried words, no word."""
    session, heard, job, result = carried_decode(engine, 2.0)
    misled = result.__class__(**{**result.__dict__, "tokens": [], "words": []})
    assert session.complete(job, misled) == []
    again = session.next_job()
    assert again is not None
    assert again.start >= heard - SAMPLE_RATE // 2 and again.prefix == ()
    assert again.end == job.end  # the same audio, heard alone


def test_too_much_committed_audio_moves_the_carried_utterance_out_before_the_utterances_own_words(engine):
    """With a 9 s limit: once the second utterance's committed words end 9 s after the first began, the
    window begins at the second utterance (its own committed words still forced), not mid-sentence."""
    session, first_start, heard = first_utterance(engine, 1.0, StreamConfig(trim_after=9.0))
    jobs = drive(engine, session, joined(SENSE[2:3], gap=0.0)[: 5 * SAMPLE_RATE])
    own_start = session._own_start
    assert heard - SAMPLE_RATE // 2 <= own_start < heard
    assert jobs[0].start == first_start
    later = [job for job in jobs if job.start == own_start]
    assert later and all(job.prefix for job in later)
    assert all(job.start in (first_start, own_start) for job in jobs)


def _repeating_carried_words(session: StreamSession, job: WindowJob, result):
    """``result`` made to say the carried sentence's last words again after them (the loop a decode of
    little new audio falls into: 0890's "He was not an ill-disposed young man." twice), each word where
    the real decode put its first."""
    carried: list = []
    for w in reversed([w for c in session._carry for w in c.words]):
        carried.insert(0, w)
        if sum(len(c.tokens) for c in carried) >= 8:
            break
    repeat = [t for w in carried for t in w.tokens]
    first = result.words[0]
    words = [first.__class__(**{**first.__dict__, "word": w.word, "tokens": list(w.tokens)}) for w in carried]
    return result.__class__(**{**result.__dict__, "tokens": repeat, "words": words})


def test_a_loop_over_the_first_moments_of_an_utterance_waits_for_more_of_it_with_the_carry_kept(engine):
    """A decode that says the carried sentence again when the new utterance has under 1 s of voice is not
    taken as misled by the carry: the next decode hears more audio, still after the carried words."""
    session, _, job, result = carried_decode(engine, 0.5)
    assert session.complete(job, _repeating_carried_words(session, job, result)) == []
    more = joined(SENSE[1:2], gap=0.0)[SAMPLE_RATE // 2 : SAMPLE_RATE]
    for i in range(0, len(more), CHUNK):
        session.feed(more[i : i + CHUNK])
    again = session.next_job()
    assert again is not None
    assert again.start == job.start and again.prefix == job.prefix and again.end > job.end


def test_a_loop_after_a_second_of_the_utterances_voice_is_decoded_again_without_the_carry(engine):
    session, heard, job, result = carried_decode(engine, 2.0)
    assert session.complete(job, _repeating_carried_words(session, job, result)) == []
    again = session.next_job()
    assert again is not None
    assert again.start >= heard - SAMPLE_RATE // 2 and again.prefix == ()
