from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from streamer.audio import load_audio
from streamer.decoding.decode import DecodingOptions, decode_features
from streamer.engine import Engine, Request, apply_compute_type
from streamer.errors import StreamerError
from streamer.mel import log_mel_spectrogram, log_mel_windows
from streamer.model.int8 import Int8Linear
from streamer.model.loading import bundled_files, load_model

from .conftest import FIXTURES, normalize

CLIPS = ["sense_and_sensibility_01_austen_64kb-0870.wav", "001.wav", "sense_and_sensibility_01_austen_64kb-0880.wav",
         "005.wav"]


@pytest.fixture(scope="module")
def engine(tiny) -> Engine:
    return Engine(tiny, max_batch=4)


def features(engine: Engine, clip: str, audio_ctx: int | None = None) -> torch.Tensor:
    return engine.encode(log_mel_spectrogram(load_audio(FIXTURES / clip))[None], audio_ctx)[0]


def single(engine: Engine, request: Request) -> list[int]:
    """The single-request decoder (decode_features) on the same features and options."""
    tok = engine.tokenizer
    options = DecodingOptions(
        language=request.language, prompt=request.prompt, prefix=request.prefix,
        without_timestamps=not request.timestamps, sample_len=request.sample_len,
    )
    return decode_features(engine.model, tok, request.audio_features[None], options)[0].tokens


def mixed_requests(engine: Engine) -> list[Request]:
    tok = engine.tokenizer
    return [
        Request(features(engine, CLIPS[0])),
        Request(features(engine, CLIPS[1]), prompt=tuple(tok.encode(" Cards called out one by one:")),
                timestamps=False),
        Request(features(engine, CLIPS[2]), prefix=tuple(tok.encode(" He was"))),
        Request(features(engine, CLIPS[3]), prompt=tuple(tok.encode(" Spades.")), sample_len=5),
    ]


@pytest.mark.accuracy
def test_an_engine_of_one_window_decodes_requests_one_at_a_time_with_the_same_tokens(tiny, engine: Engine) -> None:
    one = Engine(tiny, max_batch=4, max_windows=1)
    assert one.cache.cross_k.shape[1] == 1 and one.cache.self_k.shape[1] == 4
    requests = mixed_requests(engine)
    beam = replace(requests[2], timestamps=False, beam_size=4)  # its beams' rows all hear the one window
    assert [r.tokens for r in one.decode([*requests, beam])] == [r.tokens for r in engine.decode([*requests, beam])]


def test_a_replica_shares_the_weights_and_decodes_as_its_engine_does(engine: Engine) -> None:
    twin = engine.replica()
    assert twin.model is engine.model and twin.silence() is engine.silence()
    assert twin.cache.self_k.data_ptr() != engine.cache.self_k.data_ptr()  # a slot pool of its own
    requests = mixed_requests(engine)
    assert [r.tokens for r in twin.decode(requests)] == [r.tokens for r in engine.decode(requests)]


def test_fixed_shape_steps_need_a_window_per_row(tiny) -> None:
    with pytest.raises(ValueError, match="max_windows"):
        Engine(tiny, max_batch=4, max_windows=1, step="static")


@pytest.mark.accuracy
def test_mixed_batch_gives_each_request_its_single_tokens(engine: Engine) -> None:
    requests = mixed_requests(engine)
    batched = engine.decode(requests)
    assert [r.tokens for r in batched] == [single(engine, r) for r in requests]
    assert len(batched[3].tokens) <= 5
    assert "dashwood" in normalize(batched[0].text)


def test_reused_slots_keep_no_state(engine: Engine, tiny) -> None:
    requests = mixed_requests(engine)
    engine.decode(requests)  # fill every slot with another request's state first
    later = engine.decode(list(reversed(requests)))
    fresh = Engine(tiny, max_batch=4).decode(list(reversed(requests)))
    assert [r.tokens for r in later] == [r.tokens for r in fresh]


def test_more_requests_than_slots_are_chunked(engine: Engine) -> None:
    requests = mixed_requests(engine) * 2 + [Request(features(engine, CLIPS[1]))]
    results = engine.decode(requests)
    assert len(results) == 9
    assert results[4].tokens == results[0].tokens and results[8].tokens == single(engine, requests[8])


def test_cache_pool_is_not_reallocated(engine: Engine) -> None:
    pointers = [t.data_ptr() for t in (engine.cache.self_k, engine.cache.cross_k)]
    engine.decode(mixed_requests(engine)[:2])
    assert pointers == [t.data_ptr() for t in (engine.cache.self_k, engine.cache.cross_k)]


def test_short_audio_ctx_still_transcribes(engine: Engine) -> None:
    """A 6 s encoder window (audio_ctx 300) on a 3 s clip: same words, a fifth of the encoder's work."""
    short = features(engine, CLIPS[2], audio_ctx=300)
    assert short.shape[0] == 300
    result = engine.decode([Request(short, timestamps=False)])[0]
    assert "young man" in normalize(result.text)


@pytest.mark.accuracy
def test_int8_transcribes_the_reference_clips() -> None:
    engine = Engine(load_model("tiny.en"), max_batch=2, compute_type="int8")
    results = engine.decode([Request(features(engine, CLIPS[0])), Request(features(engine, CLIPS[3]))])
    assert normalize(results[0].text) == normalize(
        "And Mr. John Dashwood had then leisure to consider how much there might be prudently in his power to do "
        "for them."
    )
    assert "spades" in normalize(results[1].text)


def test_int8_keeps_a_float16_checkpoints_token_table_in_float16() -> None:
    """The bundled tiny.en is float16: its token table loses nothing in float16, and the decoder's state
    (positions, KV cache) stays float32."""
    engine = Engine(load_model("tiny.en"), max_batch=1, compute_type="int8")
    assert engine.model.decoder.token_embedding.weight.dtype == torch.float16
    assert engine.model.dtype == torch.float32
    assert engine.cache.self_k.dtype == engine.cache.cross_k.dtype == torch.float32


def _mapping_at(address: int) -> tuple[str, float]:
    """The file of this process's mapping that holds ``address``, and how much of it is resident (MiB)."""
    found, rss_kib = None, 0
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5 and ":" in fields[3]:  # a mapping's header line
                lo, hi = (int(x, 16) for x in fields[0].split("-"))
                if found is not None:
                    break
                if lo <= address < hi:
                    found = fields[5] if len(fields) >= 6 else ""
            elif found is not None and fields[0] == "Rss:":
                rss_kib = int(fields[1])
    assert found is not None
    return found, rss_kib / 1024


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc/self/smaps")
def test_int8_reads_the_float16_token_table_from_the_model_file_as_tokens_need_it() -> None:
    """The bundled tiny.en's token table (38 MB in float16) stays a view of the mapped model file: after
    loading, only the rows that decoding looks up are in memory."""
    engine = Engine(load_model("tiny.en"), max_batch=1, compute_type="int8")
    table = engine.model.decoder.token_embedding.weight
    assert table.dtype == torch.float16
    result = engine.decode([Request(features(engine, CLIPS[3]))])[0]
    assert "spades" in normalize(result.text)
    path, resident_mib = _mapping_at(table.data_ptr())
    assert Path(path) == bundled_files("tiny.en")["model.bin"].resolve()
    assert resident_mib < 8


def test_int8_keeps_a_float32_checkpoints_token_table_in_float32() -> None:
    engine = Engine(load_model("random:tiny"), max_batch=1, compute_type="int8")  # float32 random weights
    assert engine.model.decoder.token_embedding.weight.dtype == torch.float32


def test_windows_encoded_together_equal_windows_encoded_alone() -> None:
    """On the CPU a batch of 30 s windows is encoded a window at a time, so a window's features do not
    depend on its batch (int8 quantises each layer's input with one scale for the whole batch)."""
    engine = Engine(load_model("tiny.en"), max_batch=1, compute_type="int8")
    mels = torch.stack([log_mel_spectrogram(load_audio(FIXTURES / c), 80, padding=480000)[:, :3000] for c in CLIPS[:3]])
    together = engine.encode(mels)
    for i in range(3):
        assert torch.equal(together[i], engine.encode(mels[i : i + 1])[0])


def test_a_window_computed_as_far_as_its_audio_transcribes_it(engine: Engine) -> None:
    """30 s windows computed only over their first ``heard`` positions (the rest a window of silence's)."""
    audio = load_audio(FIXTURES / CLIPS[2])
    mels = log_mel_windows([audio], 3000)
    heard = -(-len(audio) // 320) + 25  # the audio and 0.5 s after it
    part = engine.encode(mels, heard=heard)[0]
    assert part.shape == (1500, engine.model.dims.n_audio_state)
    assert torch.equal(part[heard:], engine.silence().features[0, heard:])
    result = engine.decode([Request(part, timestamps=False)])[0]
    assert "young man" in normalize(result.text)


def test_a_window_encoded_in_part_decodes_as_before_with_the_silences_cross_attention_copied(engine: Engine) -> None:
    """A request that says how much of its window was computed (``heard``) takes the window of silence's
    cross-attention keys and values after it rather than computing them: the same words, the same times."""
    audio = load_audio(FIXTURES / CLIPS[2])
    heard = -(-len(audio) // 320) + 25  # the audio and 0.5 s after it
    part = engine.encode(log_mel_windows([audio], 3000), heard=heard)[0]
    copied, computed = (
        engine.decode([Request(part, timestamps=False, word_timestamps=True, heard=h)])[0] for h in (heard, None)
    )
    assert copied.tokens == computed.tokens
    assert copied.words is not None and computed.words is not None
    assert [(w.word, w.start, w.end) for w in copied.words] == [(w.word, w.start, w.end) for w in computed.words]
    assert [w.probability for w in copied.words] == pytest.approx([w.probability for w in computed.words], abs=1e-3)


def test_heard_positions_covering_the_window_or_a_short_window_compute_all_of_it(engine: Engine) -> None:
    mels = log_mel_windows([load_audio(FIXTURES / CLIPS[2])], 3000)
    assert torch.equal(engine.encode(mels, heard=1500), engine.encode(mels))
    assert torch.equal(engine.encode(mels, audio_ctx=300, heard=200), engine.encode(mels, audio_ctx=300))


def test_float16_on_cpu_is_refused(tiny) -> None:
    with pytest.raises(StreamerError, match="float16 needs a GPU"):
        Engine(load_model("tiny.en"), compute_type="float16")


def test_windows_of_different_lengths_decode_together_as_they_do_alone(engine):
    """One batch holds encoder outputs of several lengths: each row's cross-attention stops at its own."""
    clips = [load_audio(FIXTURES / f"00{n}.wav") for n in (1, 2, 5)]
    requests = []
    for audio, seconds in zip(clips, (4, 7, 10), strict=True):
        frames = seconds * 100
        features = engine.encode(log_mel_windows([audio], frames), audio_ctx=frames // 2)[0]
        requests.append(Request(features, timestamps=False, word_timestamps=True, n_frames=len(audio) // 160))
    together = engine.decode(requests)
    for request, result in zip(requests, together, strict=True):
        alone = engine.decode([request])[0]
        assert result.tokens == alone.tokens
        assert [(w.start, w.end) for w in result.words] == [(w.start, w.end) for w in alone.words]


def beam_single(engine: Engine, request: Request, beam_size: int) -> list[int]:
    """decode_features' beam search of one window on the same features and options."""
    options = DecodingOptions(
        language=request.language, prompt=request.prompt, prefix=request.prefix, beam_size=beam_size,
        without_timestamps=not request.timestamps, sample_len=request.sample_len,
    )
    return decode_features(engine.model, engine.tokenizer, request.audio_features[None], options)[0].tokens


@pytest.mark.accuracy
def test_a_beam_request_is_decoded_as_a_single_window_beam_search_beside_greedy_ones(engine: Engine) -> None:
    greedy = mixed_requests(engine)[:2]
    beam = Request(features(engine, CLIPS[2]), prefix=tuple(engine.tokenizer.encode(" He was")), timestamps=False,
                   beam_size=3, word_timestamps=True)
    results = engine.decode([greedy[0], beam, greedy[1]])
    assert results[1].tokens == beam_single(engine, beam, 3)
    assert [results[0].tokens, results[2].tokens] == [single(engine, r) for r in greedy]
    words = results[1].words or []
    assert "".join(w.word for w in words) == " He was" + engine.tokenizer.decode(results[1].tokens)
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:], strict=False))


def test_a_beam_wider_than_the_pool_searches_as_many_beams_as_the_pool_has_rows(engine: Engine) -> None:
    request = Request(features(engine, CLIPS[1]), timestamps=False, beam_size=engine.max_batch + 3)
    assert engine.decode([request])[0].tokens == beam_single(engine, request, engine.max_batch)


def test_a_beam_request_above_temperature_zero_samples_one_row_batched_with_others(engine: Engine) -> None:
    hot = Request(features(engine, CLIPS[1]), timestamps=False, beam_size=3, temperature=0.5)
    assert hot.beams == 1
    assert engine._chunks([hot, replace(hot, beam_size=None)]) == [[0, 1]]
    cold = replace(hot, temperature=0.0)
    assert engine._chunks([cold, replace(cold, beam_size=None)]) == [[0], [1]]  # a beam search goes alone


@pytest.mark.parametrize(("compute_type", "attention"), [("int8", torch.float32), ("int8_bfloat16", torch.bfloat16)])
def test_int8_bfloat16_runs_the_encoders_attention_in_bfloat16(compute_type: str, attention: torch.dtype) -> None:
    engine = Engine(load_model("tiny.en"), max_batch=1, compute_type=compute_type)
    assert isinstance(engine.model.encoder.blocks[0].mlp[0], Int8Linear)
    assert engine.silence().keys[0].dtype == attention
    assert engine.cache.cross_k.dtype == engine.silence_kv()[0].dtype == torch.float32  # the decoder's: as it was
    audio = load_audio(FIXTURES / CLIPS[2])
    heard = -(-len(audio) // 320) + 25
    part = engine.encode(log_mel_windows([audio], 3000), heard=heard)[0]
    assert "young man" in normalize(engine.decode([Request(part, timestamps=False, heard=heard)])[0].text)


@pytest.mark.parametrize("compute_type", ["int8", "int8_bfloat16"])
def test_int8_compute_types_refuse_a_model_off_the_cpu(compute_type: str) -> None:
    loaded = load_model("tiny.en")
    loaded.model.to("meta")  # any device but the CPU
    with pytest.raises(StreamerError, match=f"--compute-type {compute_type} runs on the CPU only"):
        apply_compute_type(loaded, compute_type)


def test_bfloat16_is_not_native_where_pytorch_is_held_to_avx2_kernels() -> None:
    probe = "from streamer.engine import bfloat16_is_native; print(bfloat16_is_native())"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, "ATEN_CPU_CAPABILITY": "avx2"})
    assert out.stdout.strip() == "False"
