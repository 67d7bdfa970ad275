from __future__ import annotations

import json

import pytest

from streamer.errors import ModelFileError
from streamer.model.loading import bundled_files
from streamer.tokenizer import LANGUAGES, Tokenizer, read_vocabulary


@pytest.fixture(scope="module")
def english() -> Tokenizer:
    return Tokenizer(read_vocabulary(bundled_files("tiny.en")["vocabulary.txt"]))


def test_special_token_ids_of_english_vocabulary(english: Tokenizer) -> None:
    assert english.n_vocab == 51864
    assert (english.eot, english.sot, english.translate, english.transcribe) == (50256, 50257, 50357, 50358)
    assert (english.sot_lm, english.sot_prev, english.no_speech, english.no_timestamps) == (50359, 50360, 50361, 50362)
    assert english.timestamp_begin == 50363
    assert english.special_tokens["<|30.00|>"] == 50363 + 1500
    assert len(english.language_tokens) == 99 and english.language_codes == list(LANGUAGES)[:99]
    assert not english.is_multilingual
    assert english.sot_sequence("en") == [50257]


def test_round_trip_and_gpt2_ranks(english: Tokenizer) -> None:
    text = " And Mr. John Dashwood had then leisure, naïve café 日本語!"
    tokens = english.encode(text)
    assert english.decode(tokens) == text
    assert english.encode(" Hello world") == [18435, 995]  # GPT-2's ids


@pytest.mark.parametrize("token", ["a b", "price€"])  # a raw space; a character no byte stands for
def test_a_vocabulary_that_is_not_byte_level_bpe_is_refused(token: str) -> None:
    vocabulary = read_vocabulary(bundled_files("tiny.en")["vocabulary.txt"])
    vocabulary[1000] = token
    with pytest.raises(ModelFileError, match="not a byte-level BPE vocabulary"):
        Tokenizer(vocabulary, "bad.txt")


def test_bytes_of_tokens_split_inside_a_character(english: Tokenizer) -> None:
    tokens = english.encode(" naïve café 日本語")
    whole = b"".join(english.decode_bytes([t]) for t in tokens)
    assert whole == " naïve café 日本語".encode()
    assert english.decode_bytes([english.sot, *tokens, english.eot]) == whole  # special tokens have no bytes
    assert any(not _is_utf8(english.decode_bytes([t])) for t in tokens)  # a token may end inside a character


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def test_decode_drops_special_tokens_and_keeps_timestamps_on_request(english: Tokenizer) -> None:
    tokens = [english.sot, english.timestamp_begin, *english.encode(" Hi."), english.timestamp_begin + 50, english.eot]
    assert english.decode(tokens) == " Hi."
    assert english.decode_with_timestamps(tokens) == "<|0.00|> Hi.<|1.00|>"


def test_suppress_list_matches_the_model_config(english: Tokenizer) -> None:
    config = json.loads(bundled_files("tiny.en")["config.json"].read_text())
    ours = set(english.non_speech_tokens) | {
        english.transcribe, english.translate, english.sot, english.sot_prev, english.sot_lm, english.no_speech
    }
    assert sorted(ours) == config["suppress_ids"]


def test_tokenizer_json_gives_the_same_tokenizer(english: Tokenizer) -> None:
    other = Tokenizer(read_vocabulary(bundled_files("tiny.en")["model.bin"].parent / "tokenizer.json"))
    assert other.special_tokens == english.special_tokens
    assert other.encode(" prudently in his power") == english.encode(" prudently in his power")


def test_multilingual_vocabulary(base) -> None:
    tok = base.tokenizer
    assert tok.is_multilingual and tok.n_vocab == 51865 and tok.eot == 50257
    assert tok.sot_sequence("de", "translate") == [50258, 50261, 50358]
    assert tok.sot_sequence("french") == [50258, tok.language_token("fr"), 50359]
    hebrew = tok.special_tokens.get("<|iw|>", tok.special_tokens.get("<|he|>"))
    assert tok.language_token("he") == tok.language_token("hebrew") == hebrew
    with pytest.raises(ValueError, match="unknown language 'xx'"):
        tok.language_token("xx")
