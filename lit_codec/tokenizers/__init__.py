"""Condition tokenizers of the codec LM: phones, MIDI, text, semantic units.

Each turns one modality into local ids ``[0, vocab_size)`` with ``symbols()`` and a
JSON-able ``metadata()`` (see :mod:`lit_codec.tokenizers.base`); the T5 text encoder
returns continuous frames instead. None downloads anything: optional packages
(phonemizer + espeakng-loader, mido, sentencepiece, transformers) are imported on first
use, and a missing one raises an ImportError naming the pip package.
"""

from __future__ import annotations

from lit_codec.tokenizers.base import ConditionEncoder, ConditionTokenizer
from lit_codec.tokenizers.features import AudioFeatures, MFCCFeatures, SSLFeatures, load_audio
from lit_codec.tokenizers.kmeans import KMeansQuantizer, fit_kmeans
from lit_codec.tokenizers.midi import MidiError, MidiFrames, MidiNote, MidiTokenizer
from lit_codec.tokenizers.phones import (
    PHONE_INVENTORY,
    SUPPORTED_LANGUAGES,
    PhoneTokenizer,
    UnknownPhoneError,
)
from lit_codec.tokenizers.semantic import SemanticTokenizer
from lit_codec.tokenizers.t5 import T5TextEncoder
from lit_codec.tokenizers.text import BPETokenizer, ByteTokenizer

__all__ = [
    "PHONE_INVENTORY",
    "SUPPORTED_LANGUAGES",
    "AudioFeatures",
    "BPETokenizer",
    "ByteTokenizer",
    "ConditionEncoder",
    "ConditionTokenizer",
    "KMeansQuantizer",
    "MFCCFeatures",
    "MidiError",
    "MidiFrames",
    "MidiNote",
    "MidiTokenizer",
    "PhoneTokenizer",
    "SSLFeatures",
    "SemanticTokenizer",
    "T5TextEncoder",
    "UnknownPhoneError",
    "fit_kmeans",
    "load_audio",
]
