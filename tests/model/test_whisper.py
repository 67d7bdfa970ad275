"""The Whisper encoder, and the decoder's cross-attention keys and values, computing only the first positions of a
window (the rest from a window of silence)."""

from __future__ import annotations

import torch

from streamer.audio import load_audio
from streamer.mel import N_FRAMES, log_mel_windows

from ..conftest import FIXTURES

LEVEL = -0.8  # a window's silence after the clamp: its loudest frame's log10 power is 0.8


@torch.inference_mode()
def test_a_silent_window_computed_in_part_equals_the_whole_computation(tiny) -> None:
    # Its positions after the first 300 are the silence's, so the part computed attends to exactly the
    # keys and values of the whole computation: the conv edge and the order of positions are as in it.
    encoder = tiny.model.encoder
    mel = torch.full((1, tiny.model.dims.n_mels, N_FRAMES), LEVEL)
    whole = encoder(mel)
    part = encoder(mel, 300, encoder.silence(LEVEL))
    torch.testing.assert_close(part, whole, atol=2e-4, rtol=1e-4)


@torch.inference_mode()
def test_a_window_of_speech_computed_in_part_hears_the_speech_and_ends_in_the_silences_states(tiny) -> None:
    encoder = tiny.model.encoder
    audio = load_audio(FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav")[: 3 * 16000]
    mels = log_mel_windows([audio, audio[: 2 * 16000]], N_FRAMES)  # (2, n_mels, 3000)
    silence = encoder.silence(float(mels[0, 0, -1]))
    part = encoder(mels, 175, silence)  # 3.5 s of each window
    whole = encoder(mels)
    assert part.shape == whole.shape == (2, 1500, tiny.model.dims.n_audio_state)
    for row in range(2):
        assert torch.equal(part[row, 175:], silence.features[0, 175:])
        assert not torch.allclose(part[row, :150], silence.features[0, :150], atol=0.5)  # the speech is heard
    # what the part computed is near what the whole window gives there, not equal: the silence after
    # the speech does not hear it (cosine 0.99 measured, against 0.47 between the silence and the whole)
    assert torch.nn.functional.cosine_similarity(part[:, :150], whole[:, :150], dim=-1).mean() > 0.95


@torch.inference_mode()
def test_cross_attention_of_windows_encoded_in_part_takes_the_silences_keys_and_values_after_the_part(tiny) -> None:
    encoder, decoder = tiny.model.encoder, tiny.model.decoder
    audio = load_audio(FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav")[: 3 * 16000]
    mels = log_mel_windows([audio, audio[: 2 * 16000]], N_FRAMES)  # (2, n_mels, 3000)
    silence = encoder.silence(LEVEL)
    features = encoder(mels, 175, silence)  # (2, 1500, D): positions from 175 on are the silence's
    part = decoder.new_cache(2)
    decoder.set_audio(features, part, heard=175, after=decoder.cross_kv(silence.features))
    whole = decoder.new_cache(2)
    decoder.set_audio(features, whole)
    torch.testing.assert_close(part.cross_k, whole.cross_k, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(part.cross_v, whole.cross_v, atol=1e-5, rtol=1e-5)
    assert bool(part.audio_valid.all())


@torch.inference_mode()
def test_encoder_attention_narrowed_to_bfloat16_keeps_its_keys_in_it_and_the_features_near_float32() -> None:
    from streamer.model.loading import load_model

    model = load_model("tiny.en").model  # its own copy: narrowing works in place
    audio = load_audio(FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav")
    mels = log_mel_windows([audio], N_FRAMES)  # (1, n_mels, 3000)
    heard = len(audio) // 320 + 25
    tokens = torch.tensor([[50257, 50362, 843, 844, 1100]])  # (1, 5)
    positions = torch.arange(5)[None, :]

    def run() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        silence = model.encoder.silence(LEVEL)
        features = model.encoder(mels, heard, silence)  # the part computed attends to the silence's keys
        cache = model.decoder.new_cache(1)
        model.decoder.set_audio(features, cache)
        return features, model.decoder(tokens, positions, cache, kv_len=5), silence.keys[0]

    features, logits, keys = run()
    assert keys.dtype == torch.float32
    model.narrow_encoder_attention(torch.bfloat16)
    narrow_features, narrow_logits, narrow_keys = run()
    assert narrow_keys.dtype == torch.bfloat16  # kept narrow: half the memory to read
    assert narrow_features.dtype == narrow_logits.dtype == torch.float32  # the projections' dtype
    similarity = torch.nn.functional.cosine_similarity(narrow_features[0, :heard], features[0, :heard], dim=-1)
    assert float(similarity.min()) > 0.99  # measured: 0.99967 at worst, 0.999996 on average
    assert torch.equal(narrow_logits.argmax(-1), logits.argmax(-1))
