"""CodecTokenizer: batched codes equal one-by-one codes; shapes, dtype, rates, loading."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_codec.lm.vocab import CodecInfo
from lit_codec.tokenizers.codec import CodecTokenizer

from ..tiny_codecs import tiny_convnext_codec, tiny_seanet_codec

LENGTHS = (0, 1, 7, 8, 9, 100, 1003, 2400)  # samples at 8 kHz; hop 8 (SEANet) / 16 (ConvNeXt)


def clips(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.3 * rng.standard_normal(n)).astype(np.float32) for n in LENGTHS]


@pytest.mark.parametrize(
    "make", [lambda: tiny_seanet_codec("rvq"), lambda: tiny_seanet_codec("fsq"), tiny_convnext_codec],
    ids=["seanet-rvq", "seanet-fsq", "convnext-rvq"],
)  # fmt: skip
def test_batched_codes_equal_one_by_one(make):
    codec = make()
    tok = CodecTokenizer(codec, max_batch_seconds=0.5)  # several batches of several clips
    audio = clips()
    batched = tok.encode_batch(audio, 8000)
    for clip, codes in zip(audio, batched):
        alone = codec.encode(torch.from_numpy(clip)[None, None]) if len(clip) else None
        assert codes.dtype == np.int16 and codes.shape == (
            -(-len(clip) // tok.hop_length),
            codec.n_q,
        )
        if alone is not None:  # (1, n_q, F): the codec's own codes of the clip alone
            np.testing.assert_array_equal(codes, alone[0].T.numpy())
        np.testing.assert_array_equal(codes, tok.encode(clip, 8000))
        assert codes.min(initial=0) >= 0 and codes.max(initial=0) < codec.codebook_size


def test_batches_respect_the_budget_and_keep_the_order():
    tok = CodecTokenizer(tiny_seanet_codec(), max_batch_seconds=3000 / 8000)
    lengths = [1000, 200, 1500, 1500, 10, 4000]
    batches = tok._batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:  # longest first; padded size within budget unless alone
        assert lengths[batch[0]] == max(lengths[i] for i in batch)
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= 3000
    codes = tok.encode_batch([np.zeros(n, np.float32) for n in lengths], 8000)
    assert [len(c) for c in codes] == [-(-n // 8) for n in lengths]


def test_info_n_q_and_wrong_rate(tmp_path):
    codec = tiny_seanet_codec()
    path = codec.export(tmp_path / "tiny.safetensors")
    tok = CodecTokenizer(path, n_q=2)  # loaded from an export, first two codebooks
    assert tok.info == CodecInfo(codec.fingerprint, 8000, 1000.0, 2, 32)
    assert tok.encode(np.zeros(80, np.float32), 8000).shape == (10, 2)
    with pytest.raises(ValueError, match=r"16000 Hz.*8000 Hz"):
        tok.encode_batch([np.zeros(160, np.float32)], sample_rate=16000)
    with pytest.raises(ValueError, match="mono"):
        tok.encode(np.zeros((2, 80), np.float32), 8000)
    with pytest.raises(ValueError, match="n_q"):
        CodecTokenizer(codec, n_q=4)
