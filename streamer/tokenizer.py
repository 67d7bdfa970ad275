"""Whisper's tokenizer on tiktoken, built from the model's own vocabulary.

The vocabulary is GPT-2 byte-level BPE: a token's rank is its id, tokens are written with GPT-2's
byte-to-printable-character table. Every id from ``<|endoftext|>`` on is a special token: start of
transcript, the language tokens, translate/transcribe, start-of-LM/previous, no-speech,
no-timestamps and the 1501 timestamps ``<|0.00|>``..``<|30.00|>``.
"""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from functools import cached_property, lru_cache
from pathlib import Path

import tiktoken

from streamer.errors import ModelFileError

# Whisper's languages, in token order (large-v3 adds the 100th, Cantonese).
LANGUAGES: dict[str, str] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian",
    "kn": "kannada", "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque",
    "is": "icelandic", "hy": "armenian", "ne": "nepali", "mn": "mongolian", "bs": "bosnian",
    "kk": "kazakh", "sq": "albanian", "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi",
    "si": "sinhala", "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi", "gu": "gujarati",
    "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek", "fo": "faroese", "ht": "haitian creole",
    "ps": "pashto", "tk": "turkmen", "nn": "nynorsk", "mt": "maltese", "sa": "sanskrit",
    "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog", "mg": "malagasy",
    "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa", "ba": "bashkir",
    "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}  # fmt: skip
TO_LANGUAGE_CODE = {name: code for code, name in LANGUAGES.items()}

# GPT-2 / Whisper pre-tokenisation pattern.
_PAT_STR = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable character for each byte, inverted: character -> byte."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    chars = list(printable)
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


def read_vocabulary(path: Path) -> list[str]:
    """Token strings by id, from a CTranslate2 ``vocabulary.txt`` or a Hugging Face ``tokenizer.json``."""
    try:
        if path.name == "tokenizer.json":
            data = json.loads(path.read_text(encoding="utf-8"))
            entries = dict(data["model"]["vocab"])
            entries.update({t["content"]: t["id"] for t in data.get("added_tokens", [])})
            tokens = [""] * (max(entries.values()) + 1)
            for token, index in entries.items():
                tokens[index] = token
            return tokens
        lines = path.read_text(encoding="utf-8").split("\n")
        return lines[:-1] if lines and lines[-1] == "" else lines
    except FileNotFoundError as e:
        raise ModelFileError(f"{path}: vocabulary file not found") from e
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError) as e:
        raise ModelFileError(f"{path}: not a Whisper vocabulary ({type(e).__name__})") from e


class Tokenizer:
    """Whisper tokenizer: text <-> ids, and the special tokens the decoder needs."""

    def __init__(self, vocabulary: Sequence[str], source: Path | str = "<vocabulary>"):
        if "<|endoftext|>" not in vocabulary or "<|startoftranscript|>" not in vocabulary:
            raise ModelFileError(f"{source}: not a Whisper vocabulary (no <|endoftext|>/<|startoftranscript|>)")
        vocabulary = list(vocabulary)
        if "<|0.00|>" not in vocabulary and "<|notimestamps|>" in vocabulary:
            # Hugging Face tokenizer files often leave the timestamp tokens implicit.
            end = vocabulary.index("<|notimestamps|>") + 1
            vocabulary = vocabulary[:end] + [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
        self.n_vocab = len(vocabulary)
        self.eot = vocabulary.index("<|endoftext|>")
        decoder = _byte_decoder()
        text_tokens = vocabulary[: self.eot]
        if not set("".join(text_tokens)) <= decoder.keys():
            raise ModelFileError(f"{source}: not a byte-level BPE vocabulary")
        # Each character stands for one byte: translate to the characters U+0000-U+00FF, encode as Latin-1
        # (in C; a generator of bytes per token took 0.26 s of every start).
        to_bytes = {ord(c): b for c, b in decoder.items()}
        ranks = {token.translate(to_bytes).encode("latin-1"): rank for rank, token in enumerate(text_tokens)}
        if len(ranks) != len(text_tokens):
            raise ModelFileError(f"{source}: two text tokens spell the same bytes")
        self._token_bytes = list(ranks)  # token -> its bytes (ranks are in token order)
        self.special_tokens = {token: i for i, token in enumerate(vocabulary) if i >= self.eot}
        self.encoding = tiktoken.Encoding(
            name=f"whisper-{self.n_vocab}",
            pat_str=_PAT_STR,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )
        self.sot = self.special_tokens["<|startoftranscript|>"]
        self.translate = self.special_tokens["<|translate|>"]
        self.transcribe = self.special_tokens["<|transcribe|>"]
        self.sot_lm = self.special_tokens["<|startoflm|>"]
        self.sot_prev = self.special_tokens["<|startofprev|>"]
        self.no_speech = self.special_tokens.get("<|nospeech|>", self.special_tokens.get("<|nocaptions|>"))
        self.no_timestamps = self.special_tokens["<|notimestamps|>"]
        self.timestamp_begin = self.special_tokens["<|0.00|>"]
        # Some vocabularies spell Hebrew with its old code "iw".
        codes = [{"iw": "he"}.get(t[2:-2], t[2:-2]) for t in vocabulary[self.sot + 1 : self.translate]]
        self.language_codes: list[str] = codes
        self.language_tokens: list[int] = list(range(self.sot + 1, self.translate))
        self.is_multilingual = self.eot == 50257

    # --- text <-> ids ---------------------------------------------------------------------------

    def encode(self, text: str) -> list[int]:
        return self.encoding.encode(text, disallowed_special=())

    def decode(self, tokens: Sequence[int]) -> str:
        """Text of the ordinary tokens (special tokens and timestamps are dropped)."""
        return self.encoding.decode([t for t in tokens if t < self.eot])

    def decode_bytes(self, tokens: Sequence[int]) -> bytes:
        """The bytes of the ordinary tokens, which may end inside a UTF-8 character."""
        return b"".join([self._token_bytes[t] for t in tokens if t < self.eot])

    def decode_with_timestamps(self, tokens: Sequence[int]) -> str:
        """Text with ``<|1.08|>``-style timestamps kept in place."""
        out: list[list[int] | str] = [[]]
        for t in tokens:
            if t >= self.timestamp_begin:
                out.append(f"<|{(t - self.timestamp_begin) * 0.02:.2f}|>")
                out.append([])
            else:
                last = out[-1]
                assert isinstance(last, list)
                last.append(t)
        return "".join(s if isinstance(s, str) else self.decode(s) for s in out)

    # --- prompts --------------------------------------------------------------------------------

    def language_token(self, language: str) -> int:
        code = TO_LANGUAGE_CODE.get(language.lower(), language.lower())
        if code not in self.language_codes:
            raise ValueError(f"unknown language {language!r}")
        return self.sot + 1 + self.language_codes.index(code)

    def sot_sequence(self, language: str | None = "en", task: str = "transcribe") -> list[int]:
        """The start-of-transcript prompt: [sot] for English-only models, [sot, lang, task] otherwise."""
        if not self.is_multilingual:
            return [self.sot]
        seq = [self.sot]
        if language is not None:
            seq.append(self.language_token(language))
            seq.append(self.translate if task == "translate" else self.transcribe)
        return seq

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Tokens of symbols that are not speech (Whisper's default suppress list)."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += ["<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))", "(((", ")))"]
        symbols += ["[[", "]]", "{{", "}}", "♪♪", "♪♪♪"]
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + sorted(miscellaneous):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return tuple(sorted(result))

    @cached_property
    def punctuation_tokens(self) -> frozenset[int]:
        return frozenset(t for t in range(self.eot) if self.decode([t]).strip() in string.punctuation)
