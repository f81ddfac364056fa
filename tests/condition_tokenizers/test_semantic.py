"""Semantic tokens: MFCC and SSL features, k-means fit/save/load/hash, SemanticTokenizer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
import torch

from lit_codec.tokenizers.features import MFCCFeatures, SSLFeatures
from lit_codec.tokenizers.kmeans import KMeansQuantizer, fit_kmeans, main
from lit_codec.tokenizers.semantic import SemanticTokenizer

SR = 16000


def synthetic_speech(seconds: float = 1.0, seed: int = 0) -> np.ndarray:
    """Chirps, tones and noise bursts: frames that fall into distinct clusters."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    parts = np.array_split(np.arange(len(t)), 5)
    audio = np.zeros_like(t)
    for i, idx in enumerate(parts):
        if i % 3 == 0:
            audio[idx] = 0.3 * np.sin(2 * np.pi * (200 + 400 * i) * t[idx])
        elif i % 3 == 1:
            audio[idx] = 0.1 * rng.standard_normal(len(idx))
        else:
            audio[idx] = 0.2 * np.sin(2 * np.pi * (1000 + 2000 * t[idx]) * t[idx])
    return audio.astype(np.float32)


def test_mfcc_shape_rate_and_resampling():
    mfcc = MFCCFeatures(sample_rate=SR, hop_length=320)
    audio = synthetic_speech(1.0)
    feats = mfcc(audio)
    assert feats.shape == (50, 39) and feats.dtype == np.float32 and np.isfinite(feats).all()
    assert mfcc.frame_rate == 50 and mfcc.dim == 39
    assert mfcc(synthetic_speech(1.1)[:16100]).shape == (51, 39)  # ceil(T / hop) frames
    assert mfcc(np.zeros(100, np.float32)).shape == (1, 39)  # shorter than a hop
    # the same audio at 8 kHz is resampled to 16 kHz first
    import soxr

    assert mfcc(soxr.resample(audio, SR, 8000), sample_rate=8000).shape == (50, 39)
    # tones and noise differ in their cepstra
    assert np.abs(feats[5, :13] - feats[15, :13]).max() > 1.0
    normalized = MFCCFeatures(normalize=True)(audio)
    np.testing.assert_allclose(normalized.mean(0), 0, atol=1e-4)
    meta = mfcc.metadata()
    assert json.loads(json.dumps(meta)) == meta and meta["kind"] == "mfcc"


def test_kmeans_deterministic_save_load_hash(tmp_path):
    mfcc = MFCCFeatures()
    feats = [mfcc(synthetic_speech(1.0, seed)) for seed in range(3)]
    a = fit_kmeans(feats, k=8, seed=0, info={"features": mfcc.metadata()})
    b = fit_kmeans(feats, k=8, seed=0, info={"features": mfcc.metadata()})
    torch.testing.assert_close(a.centroids, b.centroids, rtol=0, atol=0)
    assert a.hash == b.hash and len(a.hash) == 16
    ids = a.predict(feats[0])
    assert ids.shape == (50,) and ids.dtype == np.int64 and 0 <= ids.min() and ids.max() < 8
    assert len(np.unique(np.concatenate([a.predict(f) for f in feats]))) >= 4
    path = a.save(tmp_path / "km.safetensors")
    loaded = KMeansQuantizer.load(path)
    assert loaded.hash == a.hash and loaded.info == a.info
    np.testing.assert_array_equal(loaded.predict(feats[1]), a.predict(feats[1]))
    assert loaded.metadata()["file"] == "km.safetensors"
    assert json.loads(json.dumps(loaded.metadata())) == loaded.metadata()
    # mini-batch path (more frames than a batch) is deterministic too
    c = fit_kmeans(feats, k=8, batch_size=64, max_iter=5, seed=1)
    d = fit_kmeans(feats, k=8, batch_size=64, max_iter=5, seed=1)
    assert c.info["algorithm"] == "minibatch" and c.hash == d.hash
    assert c.inertia(np.concatenate(feats)) < 2 * a.inertia(np.concatenate(feats))
    with pytest.raises(ValueError, match="k must be in"):
        fit_kmeans(feats, k=1000)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        KMeansQuantizer.load(tmp_path / "missing.safetensors")


def test_semantic_tokenizer_from_file(tmp_path):
    mfcc = MFCCFeatures()
    audio = synthetic_speech(1.0)
    km = fit_kmeans([mfcc(audio)], k=6, info={"features": mfcc.metadata()})
    path = km.save(tmp_path / "km.safetensors")
    tok = SemanticTokenizer(MFCCFeatures(), str(path))
    ids = tok.encode(audio)
    np.testing.assert_array_equal(ids, km.predict(mfcc(audio)))
    np.testing.assert_array_equal(tok.encode(audio), ids)  # deterministic
    assert tok.vocab_size == 6 == len(tok.symbols()) and tok.frame_rate == 50
    assert len(tok.encode(audio, n_frames=53)) == 53 and len(tok.encode(audio, n_frames=10)) == 10
    wav = tmp_path / "a.wav"
    sf.write(wav, audio, SR)
    np.testing.assert_array_equal(tok.encode_file(wav), ids)
    meta = tok.metadata()
    assert json.loads(json.dumps(meta)) == meta and meta["kmeans"]["hash"] == km.hash
    with pytest.raises(ValueError, match="fitted on features"):
        SemanticTokenizer(MFCCFeatures(hop_length=160), path)
    with pytest.raises(ValueError, match="13-d frames"):
        SemanticTokenizer(MFCCFeatures(deltas=False), km)


def test_fit_kmeans_command(tmp_path, capsys):
    audio_dir = tmp_path / "wavs"
    (audio_dir / "sub").mkdir(parents=True)
    for i in range(2):
        sf.write(audio_dir / "sub" / f"{i}.wav", synthetic_speech(0.5, i), SR)
    (audio_dir / "notes.txt").write_text("not audio")
    out = tmp_path / "km.safetensors"
    assert main([str(audio_dir), str(out), "--k", "4"]) == 0
    km = KMeansQuantizer.load(out)
    assert km.k == 4 and km.dim == 39 and km.info["files"] == 2
    assert km.hash in capsys.readouterr().out


@pytest.fixture(scope="module")
def hubert_dir(tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    config = transformers.HubertConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
        conv_dim=(8, 8), conv_stride=(5, 64), conv_kernel=(10, 64), num_conv_pos_embeddings=4,
        num_conv_pos_embedding_groups=2, do_stable_layer_norm=False, feat_extract_norm="group",
    )  # fmt: skip
    path = tmp_path_factory.mktemp("ssl") / "tiny-hubert"
    transformers.HubertModel(config).save_pretrained(path)
    return path


def test_ssl_features_and_tokens(hubert_dir, tmp_path):
    ssl = SSLFeatures(hubert_dir, layer=1)
    assert ssl.frame_rate == 50 and ssl.dim == 16
    audio = synthetic_speech(1.0)
    feats = ssl(audio)
    assert feats.dtype == np.float32 and feats.shape[1] == 16 and 48 <= len(feats) <= 50
    assert np.isfinite(feats).all()
    np.testing.assert_array_equal(ssl(audio), feats)
    km = fit_kmeans([feats], k=4, info={"features": ssl.metadata()})
    tok = SemanticTokenizer(ssl, km)
    assert tok.encode(audio, n_frames=50).shape == (50,)
    meta = tok.metadata()
    assert json.loads(json.dumps(meta)) == meta and meta["features"]["layer"] == 1
    with pytest.raises(ValueError, match=r"layer must be in \[0, 2\]"):
        SSLFeatures(hubert_dir, layer=3)
    with pytest.raises(FileNotFoundError, match="config.json missing"):
        SSLFeatures(tmp_path / "no-model")
