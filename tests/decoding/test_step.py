"""The fixed-shape decode step (what a CUDA graph captures): the same tokens as the eager loop, on the
CPU through the "static" engine mode, and on a GPU through real graphs (``cuda`` tests)."""

from __future__ import annotations

import pytest
import torch

from streamer.audio import load_audio
from streamer.engine import Engine, Request
from streamer.errors import StreamerError
from streamer.mel import log_mel_spectrogram, log_mel_windows
from streamer.model.loading import LoadedModel, load_model
from tests.conftest import FIXTURES

CLIPS = ["sense_and_sensibility_01_austen_64kb-0870.wav", "001.wav", "sense_and_sensibility_01_austen_64kb-0880.wav",
         "005.wav", "002.wav", "003.wav", "004.wav", "sense_and_sensibility_01_austen_64kb-0890.wav"]


def requests(engine: Engine, n: int, sample_len: int = 224) -> list[Request]:
    """n requests of different clips, prompts, prefixes, timestamp modes and length limits (at most
    ``sample_len`` tokens)."""
    tok = engine.tokenizer
    out = []
    for i, clip in enumerate((CLIPS * 2)[:n]):
        mel = log_mel_spectrogram(load_audio(FIXTURES / clip))[None]
        features = engine.encode(mel)[0]
        kind = i % 4
        out.append(Request(
            features,
            prompt=tuple(tok.encode(" Cards called out one by one:")) if kind == 1 else (),
            prefix=tuple(tok.encode(" He")) if kind == 2 else (),
            timestamps=kind != 1,
            sample_len=min(6 if kind == 3 else 224, sample_len),
        ))
    return out


def tokens(engine: Engine, batch: list[Request]) -> list[list[int]]:
    return [r.tokens for r in engine.decode(batch)]


@pytest.fixture(scope="module")
def engines(tiny: LoadedModel) -> tuple[Engine, Engine]:
    return Engine(tiny, max_batch=4), Engine(tiny, max_batch=4, step="static")


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_the_fixed_shape_step_gives_the_eager_tokens_in_every_bucket(engines: tuple[Engine, Engine], n: int) -> None:
    eager, static = engines
    batch = requests(eager, n)
    assert tokens(static, batch) == tokens(eager, batch)


def test_each_bucket_is_made_once_and_reused(tiny: LoadedModel) -> None:
    engine = Engine(tiny, max_batch=4, step="static")
    for n in (1, 3, 4, 2, 3, 1):
        engine.decode(requests(engine, n, sample_len=4))  # which steps are made, not what they decode
    assert engine.graphs is not None
    assert sorted(engine.graphs.steps) == [(1, 1500, False), (2, 1500, False), (4, 1500, False)]
    buffers = engine.graphs.steps[(4, 1500, False)].buffers.logits.data_ptr()
    engine.decode(requests(engine, 3, sample_len=4))
    assert engine.graphs.captures == 3 and engine.graphs.steps[(4, 1500, False)].buffers.logits.data_ptr() == buffers


def streaming_requests(engine: Engine, n: int) -> list[Request]:
    """n greedy requests without timestamps (as streaming decodes), of encoder outputs of 4 to 12 s, with
    drafts: the right text, a wrong first token, or none."""
    tok = engine.tokenizer
    out = []
    for i, clip in enumerate((CLIPS * 2)[:n]):
        audio = load_audio(FIXTURES / clip)
        seconds = 4 + 4 * (i % 3)
        mel = log_mel_windows([audio], seconds * 100)
        features = engine.encode(mel, audio_ctx=seconds * 50)[0]
        frames = min(len(audio) // 160, seconds * 100)
        plain = Request(features, timestamps=False, word_timestamps=True, n_frames=frames)
        right = engine.decode([plain])[0].tokens
        draft = (tuple(right), (tok.encode(" Zebra")[0], *right[1:]), ())[i % 3]
        out.append(Request(features, timestamps=False, word_timestamps=True, n_frames=plain.n_frames, draft=draft))
    return out


@pytest.mark.parametrize("n", [1, 3])
def test_the_fixed_shape_streaming_step_gives_the_eager_tokens(engines: tuple[Engine, Engine], n: int) -> None:
    eager, static = engines
    batch = streaming_requests(eager, n)
    assert tokens(static, batch) == tokens(eager, batch)
    assert static.graphs is not None and any(greedy for _, _, greedy in static.graphs.steps)


def test_cuda_graphs_are_refused_without_a_gpu(tiny: LoadedModel) -> None:
    if tiny.model.device.type == "cuda":
        pytest.skip("the model is on a GPU")
    with pytest.raises(StreamerError, match="CUDA graphs need a CUDA device"):
        Engine(tiny, step="graph")


@pytest.fixture(scope="module")
def gpu_model() -> LoadedModel:
    return load_model("tiny.en", device=torch.device("cuda"))


@pytest.mark.cuda
@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_graph_replay_gives_the_eager_tokens_in_every_bucket(gpu_model: LoadedModel, n: int) -> None:
    eager = Engine(gpu_model, max_batch=8, step="eager")
    graphed = Engine(gpu_model, max_batch=8, step="graph")
    batch = requests(eager, n)
    assert tokens(graphed, batch) == tokens(eager, batch)
    assert tokens(graphed, batch) == tokens(eager, batch)  # a second replay of the same graph


@pytest.mark.cuda
def test_graphs_are_captured_once_per_bucket_not_per_request(gpu_model: LoadedModel) -> None:
    engine = Engine(gpu_model, max_batch=8, step="graph")
    for n in (1, 2, 3, 4, 8, 1, 3, 8):
        engine.decode(requests(engine, n))
    assert engine.graphs is not None
    assert sorted(engine.graphs.steps) == [(1, 1500, False), (2, 1500, False), (4, 1500, False), (8, 1500, False)]


@pytest.mark.cuda
@pytest.mark.parametrize("n", [1, 3, 6])
def test_streaming_graphs_give_the_eager_tokens(gpu_model: LoadedModel, n: int) -> None:
    """Greedy rows without timestamps, of several audio lengths (one padded batch), with drafts."""
    eager = Engine(gpu_model, max_batch=8, step="eager")
    graphed = Engine(gpu_model, max_batch=8, step="graph")
    batch = streaming_requests(eager, n)
    assert tokens(graphed, batch) == tokens(eager, batch)


@pytest.mark.cuda
def test_float16_graphs_transcribe_the_reference_clip() -> None:
    half = load_model("tiny.en", device=torch.device("cuda"))
    engine = Engine(half, max_batch=8, compute_type="float16", step="graph")
    text = engine.decode(requests(engine, 1))[0].text
    assert "John Dashwood had then leisure to consider" in text


def test_every_streaming_step_can_be_made_up_front(tiny: LoadedModel) -> None:
    """The daemon makes (on a GPU: captures) the streaming step of each bucket and audio length at start."""
    engine = Engine(tiny, max_batch=4, step="static")
    assert engine.prepare_steps() == 3 * 6  # buckets 1, 2, 4; audio of 5, 10, ... 30 s
    assert engine.graphs is not None
    assert {key[:2] for key in engine.graphs.steps} == {(b, a) for b in (1, 2, 4) for a in range(250, 1501, 250)}
    assert Engine(tiny, max_batch=4).prepare_steps() == 0  # eager: nothing to make
