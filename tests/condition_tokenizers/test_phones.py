"""PhoneTokenizer: espeak-ng phones for en/es/fr/it/ru, inventory, errors."""

from __future__ import annotations

import hashlib
import json
import pickle

import numpy as np
import pytest

pytest.importorskip("phonemizer")
pytest.importorskip("espeakng_loader")

from lit_codec.tokenizers.phones import (  # noqa: E402
    PHONE_INVENTORY,
    PhoneTokenizer,
    UnknownPhoneError,
    discover_symbols,
)

SENTENCES = {
    "en-us": "The quick brown fox jumps over the lazy dog.",
    "es": "El rápido zorro marrón salta sobre el perro perezoso.",
    "fr": "Le vif renard brun saute par-dessus le chien paresseux.",
    "it": "La volpe veloce salta sopra il cane pigro.",
    "ru": "Съешь же ещё этих мягких французских булок, да выпей чаю.",
}


@pytest.fixture(scope="module")
def tokenizer() -> PhoneTokenizer:
    return PhoneTokenizer()


@pytest.mark.parametrize("language", sorted(SENTENCES))
def test_sentence_gives_ids_that_map_back_to_symbols(tokenizer, language):
    ids = tokenizer.encode(SENTENCES[language], language)
    assert ids.dtype == np.int64 and len(ids) > 10
    assert ids.min() >= 0 and ids.max() < tokenizer.vocab_size
    symbols = tokenizer.decode(ids)
    assert symbols == tokenizer.phonemize(SENTENCES[language], language)
    assert "<unk>" not in symbols
    assert symbols.count("|") == len(SENTENCES[language].split()) - 1  # one per word gap
    assert "ˈ" in symbols  # stress is its own symbol
    assert [tokenizer.symbols()[i] for i in ids] == symbols


def test_splitting_rules(tokenizer):
    # stress is a symbol before the stressed phone; the diphthong stays one symbol
    assert tokenizer.phonemize("hello", "en-us") == ["h", "ə", "l", "ˈ", "oʊ"]
    assert "ː" in tokenizer.phonemize("too", "en-us")  # length is its own symbol
    assert "ʉ" in tokenizer.phonemize("люди", "ru")  # espeak's u" mnemonic written in IPA
    plain = PhoneTokenizer(with_stress=False, word_boundaries=False).phonemize("hello world")
    assert "ˈ" not in plain and "|" not in plain
    marked = PhoneTokenizer(punctuation=True).phonemize("Hello, world!")
    assert marked[-1] == "!" and "," in marked


def test_pickled_copy_gives_the_same_ids(tokenizer):
    ids = tokenizer.encode(SENTENCES["es"], "es")
    copy = pickle.loads(pickle.dumps(tokenizer))  # e.g. into a DataLoader worker
    np.testing.assert_array_equal(copy.encode(SENTENCES["es"], "es"), ids)


def test_batch_equals_single(tokenizer):
    texts = ["Buongiorno a tutti.", "", "Ciao!"]
    batch = tokenizer.encode_batch(texts, "it")
    assert len(batch[1]) == 0
    for text, ids in zip(texts, batch):
        np.testing.assert_array_equal(ids, tokenizer.encode(text, "it"))


def test_unsupported_language_lists_supported_ones():
    with pytest.raises(ValueError, match="not supported.*en-us.*ru"):
        PhoneTokenizer(language="klingon")


def test_unknown_symbol_is_reported_not_dropped(tokenizer, monkeypatch, caplog):
    monkeypatch.setattr(tokenizer, "phonemize_batch", lambda texts, language=None: [["h", "ʘ"]])
    with pytest.raises(UnknownPhoneError, match=r"'ʘ'.*'en-us'.*'click'"):
        tokenizer.encode("click", "en-us")
    collect = PhoneTokenizer(on_unknown="collect")
    monkeypatch.setattr(collect, "phonemize_batch", lambda texts, language=None: [["h", "ʘ"]])
    ids = collect.encode("click")
    assert collect.decode(ids) == ["h", "<unk>"]
    assert collect.unknown[("en-us", "ʘ")] == 1
    assert "'ʘ'" in caplog.text and "click" in caplog.text


def test_metadata_is_json_and_inventory_is_append_only(tokenizer):
    meta = tokenizer.metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert meta["kind"] == "phones" and meta["symbols"] == list(PHONE_INVENTORY)
    assert tokenizer.espeak_version().startswith("1.")
    assert len(set(PHONE_INVENTORY)) == len(PHONE_INVENTORY) == tokenizer.vocab_size
    # the first 152 symbols (inventory version 1) never change: models trained on them rely on it
    first = hashlib.sha256("\n".join(PHONE_INVENTORY[:152]).encode()).hexdigest()[:16]
    assert first == "2a75fc1485162b54"


def test_discover_symbols_covers_the_inventory():
    counts = discover_symbols(["Sí, señor."], "es")
    assert set(counts) <= set(PHONE_INVENTORY)
    assert counts["|"] == 1
