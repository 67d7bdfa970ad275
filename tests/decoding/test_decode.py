from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer.audio import load_audio
from streamer.decoding.decode import DecodingOptions, decode, suppress_list
from streamer.decoding.rules import LogitRules, RuleState
from streamer.mel import N_FRAMES, log_mel_spectrogram, pad_or_trim

from ..conftest import FIXTURES


def window(clip: str) -> torch.Tensor:
    return pad_or_trim(log_mel_spectrogram(load_audio(FIXTURES / clip)), N_FRAMES)


def full_recompute_greedy(tiny, mel: torch.Tensor, options: DecodingOptions) -> list[int]:
    """A plain decoder: every step runs the whole sequence again on a fresh cache, nothing reused."""
    model, tok = tiny.model, tiny.tokenizer
    with torch.inference_mode():
        features = model.encoder(mel[None])
        tokens = tok.sot_sequence("en") + ([tok.no_timestamps] if options.without_timestamps else [])
        begin = len(tokens)
        rules = LogitRules(tok, model.dims.n_vocab, features.device, suppress_list(tok, options))
        state = RuleState.new([not options.without_timestamps], features.device)
        for _ in range(224):
            cache = model.decoder.new_cache(1)
            model.decoder.set_audio(features, cache)
            seq = torch.tensor([tokens])
            logits = model.decoder(seq, torch.arange(len(tokens))[None], cache)[:, -1]
            nxt = rules.apply(logits, state).argmax(dim=-1)
            if int(nxt) == tok.eot:
                break
            tokens.append(int(nxt))
            state.advance(nxt, tok.timestamp_begin)
    return tokens[begin:]


@pytest.mark.parametrize("timestamps", [True, False])
@pytest.mark.parametrize("clip", ["sense_and_sensibility_01_austen_64kb-0870.wav", "005.wav"])
def test_static_cache_matches_full_recompute(tiny, clip: str, timestamps: bool) -> None:
    options = DecodingOptions(without_timestamps=not timestamps)
    mel = window(clip)
    cached = decode(tiny.model, tiny.tokenizer, mel, options)[0].tokens
    assert cached == full_recompute_greedy(tiny, mel, options)
    assert len(cached) > 5


def test_cache_tensors_are_allocated_once(tiny) -> None:
    """Decoding writes into the cache it was given: no reallocation, positions past the text untouched."""
    model = tiny.model
    cache = model.decoder.new_cache(1)
    pointers = [t.data_ptr() for t in (cache.self_k, cache.self_v, cache.cross_k, cache.cross_v)]
    with torch.inference_mode():
        model.decoder.set_audio(model.encoder(window("001.wav")[None]), cache)
        tokens = torch.tensor([[tiny.tokenizer.sot, tiny.tokenizer.no_timestamps, 940]])
        model.decoder(tokens, torch.arange(3)[None], cache, kv_len=3)
        model.decoder(torch.tensor([[286]]), torch.tensor([[3]]), cache, kv_len=4)
    assert pointers == [t.data_ptr() for t in (cache.self_k, cache.self_v, cache.cross_k, cache.cross_v)]
    assert cache.self_k[:, :, :4].abs().sum() > 0
    assert cache.self_k[:, :, 4:].abs().sum() == 0


def test_batched_windows_equal_single_windows(tiny) -> None:
    clips = ["001.wav", "sense_and_sensibility_01_austen_64kb-0890.wav", "003.wav"]
    mels = torch.stack([window(c) for c in clips])
    batched = decode(tiny.model, tiny.tokenizer, mels)
    for clip, result in zip(clips, batched, strict=True):
        assert result.tokens == decode(tiny.model, tiny.tokenizer, window(clip))[0].tokens


def test_beam_of_one_is_greedy(tiny) -> None:
    mel = window("sense_and_sensibility_01_austen_64kb-0880.wav")
    greedy = decode(tiny.model, tiny.tokenizer, mel)[0]
    beam = decode(tiny.model, tiny.tokenizer, mel, DecodingOptions(beam_size=1))[0]
    assert beam.tokens == greedy.tokens
    assert beam.avg_logprob == pytest.approx(greedy.avg_logprob, abs=1e-4)


def test_beam_search_scores_at_least_greedy(tiny) -> None:
    mel = window("002.wav")
    greedy = decode(tiny.model, tiny.tokenizer, mel)[0]
    beam = decode(tiny.model, tiny.tokenizer, mel, DecodingOptions(beam_size=5))[0]
    assert beam.avg_logprob >= greedy.avg_logprob - 1e-4
    assert beam.text


def test_timestamps_come_in_order_and_pairs(tiny) -> None:
    tok = tiny.tokenizer
    tokens = decode(tiny.model, tok, window("sense_and_sensibility_01_austen_64kb-0870.wav"))[0].tokens
    stamps = [t for t in tokens if t >= tok.timestamp_begin]
    assert tokens[0] >= tok.timestamp_begin and tokens[0] - tok.timestamp_begin <= 50  # <= 1.0 s
    assert tokens[-1] >= tok.timestamp_begin
    assert stamps == sorted(stamps)


def test_silence_has_high_no_speech_probability(tiny) -> None:
    silence = pad_or_trim(log_mel_spectrogram(np.zeros(16000 * 5, dtype=np.float32)), N_FRAMES)
    assert decode(tiny.model, tiny.tokenizer, silence)[0].no_speech_prob > 0.6


def test_sampling_is_seeded_by_torch(tiny) -> None:
    mel = window("004.wav")
    options = DecodingOptions(temperature=1.0, best_of=3)
    torch.manual_seed(1)
    a = decode(tiny.model, tiny.tokenizer, mel, options)[0].tokens
    torch.manual_seed(1)
    b = decode(tiny.model, tiny.tokenizer, mel, options)[0].tokens
    assert a == b


def test_conflicting_options_are_refused(tiny) -> None:
    with pytest.raises(ValueError, match="beam_size and best_of"):
        decode(tiny.model, tiny.tokenizer, window("001.wav"), DecodingOptions(beam_size=2, best_of=2))
