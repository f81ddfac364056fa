"""Phone tokenizer: text in a language -> phone ids, through espeak-ng (pip only, offline).

The text is phonemized by espeak-ng via ``phonemizer``; the espeak-ng library and its data
come from the ``espeakng-loader`` wheel, so ``pip install phonemizer espeakng-loader`` is
all it takes (no apt, no download at run time). A system espeak-ng can be used instead by
passing ``espeak_library`` and ``espeak_data``.

How IPA becomes symbols (``PhoneTokenizer.phonemize``):

- a *phone* is what espeak-ng emits as one phoneme: diphthongs and affricates stay one
  symbol (``aɪ``, ``oʊ``, ``tʃ``, ``dʒ``), as do phones with attached diacritics
  (palatalised ``tʲ``, nasal ``ɛ̃``, syllabic ``n̩``) and espeak's own marks (``ə-``,
  ``ɪ^``) — espeak-ng knows the phoneme boundaries, IPA strings alone do not; the Russian
  mnemonic ``u"`` is written ``ʉ`` (:data:`ESPEAK_MNEMONICS`);
- stress is split off: ``ˈ`` (primary) and ``ˌ`` (secondary) are symbols of their own,
  placed before the stressed phone, so ``ˈoʊ`` -> ``ˈ oʊ`` and the inventory does not hold
  each vowel three times;
- length is split off: ``ː`` is a symbol of its own after the phone (``iː`` -> ``i ː``;
  Italian geminates ``tː`` -> ``t ː``); same for half-long ``ˑ``;
- word boundaries are the symbol ``|``; with ``punctuation=True`` the marks
  ``, . ! ? ; : ...`` that espeak keeps become symbols of their own, otherwise they are
  removed before phonemization (digits are read out by espeak-ng in the language).

The phone set is one inventory shared by all supported languages (:data:`PHONE_INVENTORY`),
built from what espeak-ng 1.52 emits for them (random pseudo-words from each alphabet,
numbers and sentences, see :func:`discover_symbols`). It is **append-only**: ids never
move; a symbol found later goes at the end. A symbol outside the inventory is never
dropped: ``on_unknown="raise"`` raises :class:`UnknownPhoneError` naming the symbol, the
language and the text; ``on_unknown="collect"`` maps it to ``<unk>``, logs a warning with
the same details once per (language, symbol) and counts it in ``PhoneTokenizer.unknown``.
"""

from __future__ import annotations

import logging
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import numpy as np

from lit_codec.tokenizers.base import require, sha256_bytes

__all__ = [
    "LANGUAGE_ALIASES",
    "PHONE_INVENTORY",
    "PhoneTokenizer",
    "SUPPORTED_LANGUAGES",
    "UnknownPhoneError",
    "discover_symbols",
]

log = logging.getLogger(__name__)

# espeak-ng voices whose phones PHONE_INVENTORY covers
SUPPORTED_LANGUAGES = ("en-us", "en-gb", "es", "es-419", "fr-fr", "it", "ru", "de", "pt-br")
# short names accepted for convenience
LANGUAGE_ALIASES = {"en": "en-us", "fr": "fr-fr"}

UNK = "<unk>"
WORD_BOUNDARY = "|"
STRESS_MARKS = ("ˈ", "ˌ")
LENGTH_MARKS = ("ː", "ˑ")
# the marks phonemizer keeps with preserve_punctuation (its default set)
PUNCTUATION = tuple(';:,.!?¡¿—…"«»“”(){}[]')

INVENTORY_VERSION = 1
INVENTORY_BUILT_WITH = "espeak-ng 1.52.0 (espeakng-loader 0.2.4, phonemizer 3.4.0)"
# fmt: off
PHONE_INVENTORY: tuple[str, ...] = (
    # specials and suprasegmentals (ids 0-5)
    UNK, WORD_BOUNDARY, "ˈ", "ˌ", "ː", "ˑ",
    # punctuation, used with punctuation=True (ids 6-26)
    *PUNCTUATION,
    # phones of espeak-ng 1.52 for SUPPORTED_LANGUAGES, sorted (ids 27-151)
    "a", "a-", "aɪ", "aɪə", "aɪɚ", "aʊ", "b", "bʲ", "d", "dz", "dʒ", "dʒʲ",
    "dʲ", "d̪", "e", "e-", "eə", "eɪ", "eʊ", "f", "fʲ", "h", "i", "iə",
    "iʊ", "j", "ja", "ju", "k", "kʲ", "l", "m", "mʲ", "n", "nʲ", "n̩",
    "o", "oɪ", "oʊ", "õ", "p", "pf", "pʲ", "r", "rʲ", "s", "ss", "sʲ",
    "t", "ts", "tʃ", "tʃʲ", "tʲ", "u", "uɪ", "ũ", "v", "vʲ", "w", "x",
    "y", "y-", "z", "æ", "ææ", "ç", "ð", "ø", "ŋ", "œ", "œ̃", "ɐ",
    "ɐɐ", "ɐ̃", "ɐ̃ʊ̃", "ɑ", "ɑ̃", "ɒ", "ɔ", "ɔø", "ɔɪ", "ɔ̃", "ɕ", "ə",
    "ə-", "əl", "əʊ", "ɚ", "ɛ", "ɛɪ", "ɛɹ", "ɛʊ", "ɛ̃", "ɜ", "ɟ", "ɡ",
    "ɡʲ", "ɣ", "ɪ", "ɪ^", "ɪɹ", "ɬ", "ɭ", "ɭʲ", "ɲ", "ɵ", "ɹ", "ɾ",
    "ʁ", "ʃ", "ʉ", "ʊ", "ʊɐ", "ʊə", "ʊɹ", "ʌ", "ʎ", "ʏ", "ʑ", "ʒ",
    "ʔ", "ʝ", "β", "θ", "ᵻ",
    # later additions go here, at the end: ids never move
)
# fmt: on

# espeak-ng mnemonics that phonemizer prints where a phoneme has no IPA letter, per voice,
# and the IPA they stand for; replaced before punctuation is peeled off (u" ends in a quote)
ESPEAK_MNEMONICS = {"ru": {'u"': "ʉ"}}

_SPLIT_MARKS = re.compile("([" + "".join(STRESS_MARKS + LENGTH_MARKS) + "])")
_WORD_SEP = " | "
# phonemizer's own messages ("words count mismatch", language switches): errors only
_ESPEAK_LOG = logging.getLogger(f"{__name__}.espeak")
_ESPEAK_LOG.setLevel(logging.ERROR)


class UnknownPhoneError(ValueError):
    """espeak-ng emitted a symbol that is not in :data:`PHONE_INVENTORY`.

    Attributes:
        symbol: the symbol.
        language: the espeak-ng voice.
        text: the text that produced it.
    """

    def __init__(self, symbol: str, language: str, text: str):
        self.symbol, self.language, self.text = symbol, language, text
        names = " ".join(f"U+{ord(c):04X}" for c in symbol)
        super().__init__(
            f"phone {symbol!r} ({names}) from espeak-ng for language {language!r} is not in "
            f"PHONE_INVENTORY; text: {text!r}. Append it to PHONE_INVENTORY (ids never move) "
            f"or pass on_unknown='collect' to map it to {UNK} and count it."
        )


class PhoneTokenizer:
    """Text + language -> phone ids in ``[0, len(PHONE_INVENTORY))``.

    Args:
        language: default espeak-ng voice (one of :data:`SUPPORTED_LANGUAGES` or an alias
            of :data:`LANGUAGE_ALIASES`); ``encode`` may name another per call.
        with_stress: emit the stress symbols ``ˈ`` and ``ˌ``.
        punctuation: keep punctuation marks as symbols (they carry pauses and intonation);
            otherwise they are removed.
        word_boundaries: emit ``|`` between words.
        on_unknown: ``"raise"`` :class:`UnknownPhoneError` on a symbol outside the
            inventory, or ``"collect"`` it: ``<unk>`` id, a warning and a count in
            :attr:`unknown`.
        espeak_library: path of a libespeak-ng shared library; default: the one of the
            ``espeakng-loader`` wheel.
        espeak_data: path of the matching ``espeak-ng-data`` folder; default: the one of
            the ``espeakng-loader`` wheel.
    """

    def __init__(
        self,
        language: str = "en-us",
        with_stress: bool = True,
        punctuation: bool = False,
        word_boundaries: bool = True,
        on_unknown: Literal["raise", "collect"] = "raise",
        espeak_library: str | None = None,
        espeak_data: str | None = None,
    ):
        if on_unknown not in ("raise", "collect"):
            raise ValueError(f"on_unknown must be 'raise' or 'collect', got {on_unknown!r}")
        self.language = self.resolve_language(language)
        self.with_stress = with_stress
        self.punctuation = punctuation
        self.word_boundaries = word_boundaries
        self.on_unknown = on_unknown
        self.espeak_library = espeak_library
        self.espeak_data = espeak_data
        self.unknown: Counter[tuple[str, str]] = Counter()  # (language, symbol) -> count
        self._ids = {s: i for i, s in enumerate(PHONE_INVENTORY)}
        self._backends: dict[str, Any] = {}
        self._version: str | None = None

    # -- the common interface -------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return len(PHONE_INVENTORY)

    def symbols(self) -> list[str]:
        """The symbol of each id."""
        return list(PHONE_INVENTORY)

    def metadata(self) -> dict[str, Any]:
        """Kind, inventory (and its hash), options.

        Static: it does not depend on the espeak-ng installed (``espeak_version()`` says
        which one runs; ``inventory_built_with`` is the one the inventory was made from).
        """
        return {
            "kind": "phones",
            "backend": "espeak-ng",
            "inventory_built_with": INVENTORY_BUILT_WITH,
            "inventory_version": INVENTORY_VERSION,
            "inventory_hash": sha256_bytes("\n".join(PHONE_INVENTORY).encode()),
            "symbols": list(PHONE_INVENTORY),
            "languages": list(SUPPORTED_LANGUAGES),
            "with_stress": self.with_stress,
            "punctuation": self.punctuation,
            "word_boundaries": self.word_boundaries,
        }

    # -- text -> symbols -> ids -------------------------------------------------------

    @staticmethod
    def resolve_language(language: str) -> str:
        """The espeak-ng voice of ``language``, or a ValueError listing the supported ones."""
        name = LANGUAGE_ALIASES.get(language.lower(), language.lower())
        if name not in SUPPORTED_LANGUAGES:
            aliases = ", ".join(f"{k}={v}" for k, v in LANGUAGE_ALIASES.items())
            raise ValueError(
                f"language {language!r} is not supported by PhoneTokenizer; supported: "
                f"{', '.join(SUPPORTED_LANGUAGES)} (aliases: {aliases}). Another espeak-ng "
                f"voice needs its phones in PHONE_INVENTORY first (see discover_symbols)."
            )
        return name

    def phonemize(self, text: str, language: str | None = None) -> list[str]:
        """The symbols of one text (unknown ones included, unchecked)."""
        return self.phonemize_batch([text], language)[0]

    def phonemize_batch(self, texts: Sequence[str], language: str | None = None) -> list[list[str]]:
        """The symbols of several texts in one espeak-ng call (faster for data preparation)."""
        lang = self.resolve_language(language or self.language)
        backend = self._backend(lang)
        separator = require("phonemizer.separator", "phonemizer espeakng-loader", "PhoneTokenizer")
        lines = [" ".join(unicodedata.normalize("NFC", t).split()) for t in texts]
        todo = [i for i, line in enumerate(lines) if line]
        out: list[list[str]] = [[] for _ in texts]
        if todo:
            ipa = backend.phonemize(
                [lines[i] for i in todo],
                separator=separator.Separator(phone=" ", word=_WORD_SEP, syllable=""),
                strip=True,
            )
            for i, line in zip(todo, ipa):
                out[i] = self._split(line, lang)
        return out

    def encode(self, text: str, language: str | None = None) -> np.ndarray:
        """Phone ids of one text.

        Args:
            text: the text, in ``language``.
            language: espeak-ng voice or alias; default: the tokenizer's.

        Returns:
            ``(n,)`` int64 ids in ``[0, vocab_size)``.
        """
        return self.encode_batch([text], language)[0]

    def encode_batch(self, texts: Sequence[str], language: str | None = None) -> list[np.ndarray]:
        """Phone ids of several texts of one language (one espeak-ng call)."""
        lang = self.resolve_language(language or self.language)
        return [
            self._to_ids(symbols, lang, text)
            for text, symbols in zip(texts, self.phonemize_batch(texts, lang))
        ]

    __call__ = encode

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The symbols of ids."""
        return [PHONE_INVENTORY[int(i)] for i in ids]

    def espeak_version(self) -> str:
        """The version of the espeak-ng library in use, e.g. ``"1.52.0"``."""
        if self._version is None:
            self._setup()
            backend = require("phonemizer.backend", "phonemizer espeakng-loader", "PhoneTokenizer")
            self._version = ".".join(str(v) for v in backend.EspeakBackend.version())
        return self._version

    def __getstate__(self) -> dict[str, Any]:
        # espeak backends hold ctypes handles: a copy (DataLoader worker, process pool)
        # makes its own on first use
        return {**self.__dict__, "_backends": {}}

    # -- internals ----------------------------------------------------------------------

    def _to_ids(self, symbols: list[str], language: str, text: str) -> np.ndarray:
        ids = np.empty(len(symbols), dtype=np.int64)
        for n, symbol in enumerate(symbols):
            i = self._ids.get(symbol)
            if i is None:
                if self.on_unknown == "raise":
                    raise UnknownPhoneError(symbol, language, text)
                if not self.unknown[(language, symbol)]:
                    log.warning("%s", UnknownPhoneError(symbol, language, text))
                self.unknown[(language, symbol)] += 1
                i = self._ids[UNK]
            ids[n] = i
        return ids

    def _split(self, line: str, language: str) -> list[str]:
        """Symbols of one phonemized line (phones separated by spaces, words by ``|``)."""
        mnemonics = ESPEAK_MNEMONICS.get(language, {})
        symbols: list[str] = []
        for token in line.split():
            for mnemonic, ipa in mnemonics.items():
                token = token.replace(mnemonic, ipa)
            if token == WORD_BOUNDARY:
                if self.word_boundaries and symbols and symbols[-1] != WORD_BOUNDARY:
                    symbols.append(WORD_BOUNDARY)
                continue
            # phonemizer glues kept punctuation to the neighbouring phone: peel it off
            head = len(token) - len(token.lstrip("".join(PUNCTUATION)))
            core = token[head:].rstrip("".join(PUNCTUATION))
            tail = token[head + len(core) :]
            if self.punctuation:
                symbols.extend(token[:head])
            for part in _SPLIT_MARKS.split(core):
                if not part or (part in STRESS_MARKS and not self.with_stress):
                    continue
                symbols.append(part)
            if self.punctuation:
                symbols.extend(tail)
        if symbols and symbols[-1] == WORD_BOUNDARY:
            symbols.pop()
        return symbols

    def _setup(self) -> None:
        """Point phonemizer at the espeak-ng library and data (once per process)."""
        wrapper = require(
            "phonemizer.backend.espeak.wrapper", "phonemizer espeakng-loader", "PhoneTokenizer"
        )
        library, data = self.espeak_library, self.espeak_data
        if library is None or data is None:
            loader = require("espeakng_loader", "espeakng-loader", "PhoneTokenizer")
            library = library or loader.get_library_path()
            data = data or loader.get_data_path()
        if not os.path.isdir(data):
            raise FileNotFoundError(f"espeak-ng data folder {data!r} does not exist")
        # the library looks for phontab under ESPEAK_DATA_PATH (else its build folder)
        os.environ["ESPEAK_DATA_PATH"] = str(data)
        wrapper.EspeakWrapper.set_library(str(library))
        if hasattr(wrapper.EspeakWrapper, "set_data_path"):
            wrapper.EspeakWrapper.set_data_path(str(data))

    def _backend(self, language: str) -> Any:
        if language not in self._backends:
            self._setup()
            backend = require("phonemizer.backend", "phonemizer espeakng-loader", "PhoneTokenizer")
            self._backends[language] = backend.EspeakBackend(
                language,
                preserve_punctuation=self.punctuation,
                with_stress=self.with_stress,
                tie=False,
                language_switch="remove-flags",  # foreign words keep their own phones
                logger=_ESPEAK_LOG,
            )
        return self._backends[language]


def discover_symbols(
    texts: Iterable[str], language: str, tokenizer: PhoneTokenizer | None = None
) -> Counter[str]:
    """Count the symbols espeak-ng emits for texts, to extend :data:`PHONE_INVENTORY`.

    Args:
        texts: sentences or words in ``language``.
        language: espeak-ng voice; need not be supported yet.
        tokenizer: options (stress, punctuation) to phonemize with; default: all symbols.

    Returns:
        symbol -> count; those missing from the inventory are what to append.
    """
    tokenizer = tokenizer or PhoneTokenizer(punctuation=True)
    texts = list(texts)
    tokenizer._backends.pop(language, None)
    backend = tokenizer._backend(language)  # bypasses the language check on purpose
    separator = require("phonemizer.separator", "phonemizer espeakng-loader", "PhoneTokenizer")
    lines = backend.phonemize(
        [" ".join(t.split()) for t in texts],
        separator=separator.Separator(phone=" ", word=_WORD_SEP, syllable=""),
        strip=True,
    )
    counts: Counter[str] = Counter()
    for line in lines:
        counts.update(tokenizer._split(line, language))
    return counts
