"""Property tests (hypothesis) of the protocol parsers and the frame decoder: any input gives a value or
a ProtocolError with a code and a close code, never another exception."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.daemon import protocol
from streamer.daemon.protocol import ProtocolError, Start
from streamer.streaming.sources import PcmDecoder

CLOSE_CODES = {protocol.POLICY, protocol.UNSUPPORTED, protocol.TOO_BIG}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
start_like = st.fixed_dictionaries(
    {"type": st.sampled_from(["start", "Start", "end", 3])},
    optional={
        "sample_rate": st.one_of(st.integers(-10, 200_000), st.floats(), st.text(max_size=5), st.booleans()),
        "encoding": st.one_of(st.sampled_from(["pcm_s16le", "pcm_f32le", "mp3", ""]), json_values),
        "language": st.one_of(st.sampled_from(["en", "english", "de", "xx", None]), json_values),
        "task": json_values,
        "partials": json_values,
        "word_timestamps": json_values,
        "extra": json_values,
    },
)
messages = st.one_of(st.text(max_size=200), json_values.map(json.dumps), start_like.map(json.dumps))


def refused_properly(error: ProtocolError) -> bool:
    return bool(error.code) and bool(error.message) and error.close_code in CLOSE_CODES


@settings(max_examples=400, deadline=None)
@given(messages, st.booleans())
def test_parse_start_returns_a_start_or_refuses(text, multilingual):
    try:
        start = protocol.parse_start(text, multilingual)
    except ProtocolError as e:
        assert refused_properly(e)
    else:
        assert isinstance(start, Start) and 8000 <= start.sample_rate <= 48000


@settings(max_examples=400, deadline=None)
@given(messages)
def test_parse_control_returns_a_control_or_refuses(text):
    try:
        control = protocol.parse_control(text)
    except ProtocolError as e:
        assert refused_properly(e)
    else:
        assert control.type in ("finalize", "keepalive", "end")


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(["pcm_s16le", "pcm_f32le"]),
    st.sampled_from([8000, 11025, 16000, 22050, 44100, 48000]),
    st.lists(st.binary(max_size=3000), max_size=8),
)
def test_frames_are_checked_then_decoded_to_finite_16k_samples(encoding, rate, frames):
    start = Start(rate, encoding, "en", "transcribe", True, True)
    decoder = PcmDecoder(encoding, rate)
    for frame in frames:
        try:
            protocol.check_frame(frame, start)
        except ProtocolError as e:
            assert refused_properly(e)
            continue
        samples = decoder.decode(frame)
        assert samples.dtype == np.float32 and np.isfinite(samples).all()
        assert np.abs(samples).max(initial=0.0) <= 1.0 + 1e-3  # soxr may ring slightly past full scale
