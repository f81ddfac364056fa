"""Text: UTF-8 bytes, sentencepiece BPE trained here, a tiny random T5 encoder saved here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lit_codec.tokenizers.base import require
from lit_codec.tokenizers.text import BPETokenizer, ByteTokenizer

SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "a codec language model turns audio into tokens",
    "hello world, this is a tiny corpus for a tiny tokenizer",
    "el rápido zorro marrón salta sobre el perro perezoso",
    "les tokens de texte sont des morceaux de mots",
] * 4


def test_bytes_round_trip():
    tok = ByteTokenizer()
    ids = tok.encode("héllo ✓")
    assert ids.dtype == np.int64 and len(ids) == 10 and ids.max() < tok.vocab_size == 256
    assert tok.decode(ids) == "héllo ✓"
    assert tok.symbols()[ids[0]] == "<0x68>"
    assert tok.metadata() == {"kind": "bytes", "encoding": "utf-8"}


def test_bpe_train_save_load(tmp_path):
    pytest.importorskip("sentencepiece")
    model = tmp_path / "bpe.model"
    tok = BPETokenizer.train(SENTENCES, model, vocab_size=80, byte_fallback=False)
    assert model.is_file() and tok.vocab_size == 80 == len(tok.symbols())
    ids = tok.encode("the quick brown fox")
    assert 0 < len(ids) < len("the quick brown fox") and ids.max() < tok.vocab_size
    assert tok.decode(ids) == "the quick brown fox"
    loaded = BPETokenizer(model)
    np.testing.assert_array_equal(loaded.encode("hello world"), tok.encode("hello world"))
    meta = loaded.metadata()
    assert (
        json.loads(json.dumps(meta)) == meta
        and meta["pieces_hash"] == tok.metadata()["pieces_hash"]
    )
    # deterministic: the same text trains the same model
    again = BPETokenizer.train(
        SENTENCES, tmp_path / "again.model", vocab_size=80, byte_fallback=False
    )
    assert again.metadata()["pieces_hash"] == meta["pieces_hash"]
    # from a text file
    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(SENTENCES), encoding="utf-8")
    assert (
        BPETokenizer.train(text, tmp_path / "file.model", 80, byte_fallback=False).vocab_size == 80
    )
    with pytest.raises(FileNotFoundError, match="nope.model"):
        BPETokenizer(tmp_path / "nope.model")


def test_missing_package_names_the_pip_package():
    with pytest.raises(ImportError, match="pip install not-a-real-package"):
        require("not_a_real_module_xyz", "not-a-real-package", "SomeTokenizer")


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    """A tiny random T5 encoder and its tokenizer (from a sentencepiece model), saved to disk."""
    spm = pytest.importorskip("sentencepiece")
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("t5")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(SENTENCES), encoding="utf-8")
    # T5's layout: <pad>=0 </s>=1 <unk>=2
    spm.SentencePieceTrainer.train(
        input=str(corpus), model_prefix=str(root / "spiece"), vocab_size=60, model_type="unigram",
        pad_id=0, eos_id=1, unk_id=2, bos_id=-1, num_threads=1, minloglevel=2,
    )  # fmt: skip
    sp = spm.SentencePieceProcessor(model_file=str(root / "spiece.model"))
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    tokenizer = transformers.T5Tokenizer(vocab=vocab, extra_ids=0)
    config = transformers.T5Config(
        vocab_size=sp.get_piece_size(), d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2,
        relative_attention_num_buckets=8, decoder_start_token_id=0,
    )  # fmt: skip
    model_dir = root / "tiny-t5"
    transformers.T5EncoderModel(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    return model_dir


def test_t5_encoder_from_local_dir(t5_dir):
    from lit_codec.tokenizers.t5 import T5TextEncoder

    encoder = T5TextEncoder(t5_dir)
    frames = encoder.encode("the quick brown fox")
    n_tokens = len(encoder.token_ids("the quick brown fox"))
    assert frames.shape == (n_tokens, 16) and frames.dtype == np.float32
    assert np.isfinite(frames).all() and encoder.dim == 16
    # the same ids and frames from the sentencepiece model directly
    direct = T5TextEncoder(t5_dir, tokenizer=t5_dir.parent / "spiece.model")
    assert direct.token_ids("the quick brown fox") == encoder.token_ids("the quick brown fox")
    np.testing.assert_allclose(direct.encode("the quick brown fox"), frames, atol=1e-6)
    meta = encoder.metadata()
    assert json.loads(json.dumps(meta)) == meta and meta["kind"] == "t5" and meta["dim"] == 16
    short = T5TextEncoder(t5_dir, max_tokens=3)
    assert short.encode("the quick brown fox jumps over the lazy dog").shape == (3, 16)


def test_t5_missing_dir_says_what_to_pass(tmp_path):
    from lit_codec.tokenizers.t5 import T5TextEncoder

    with pytest.raises(FileNotFoundError, match=r"no T5 checkpoint in .*absent.*model_dir="):
        T5TextEncoder(tmp_path / "absent")
