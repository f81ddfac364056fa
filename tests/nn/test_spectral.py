import math

import numpy as np
import pytest
import torch

from lit_codec.nn.configurable import build_module, module_config
from lit_codec.nn.spectral import (
    MelSpectrogram,
    hz_to_mel,
    mel_filterbank,
    mel_to_hz,
    stft_magnitude,
)


def test_mel_scale_known_values():
    # Slaney: linear at 200/3 Hz per mel up to 1 kHz (= 15 mels), then log steps of ln(6.4)/27.
    assert float(hz_to_mel(1000.0)) == pytest.approx(15.0)
    assert float(hz_to_mel(500.0)) == pytest.approx(7.5)
    assert float(hz_to_mel(6400.0)) == pytest.approx(15.0 + 27.0)
    assert float(mel_to_hz(15.0)) == pytest.approx(1000.0)
    assert float(mel_to_hz(42.0)) == pytest.approx(6400.0)
    # HTK: 2595 log10(1 + f / 700): 1000 Hz is 999.9856 mels.
    assert float(hz_to_mel(1000.0, "htk")) == pytest.approx(999.9856, abs=1e-3)
    assert float(mel_to_hz(999.9856, "htk")) == pytest.approx(1000.0, abs=1e-3)
    f = torch.tensor([0.0, 123.0, 999.0, 1000.0, 4321.0, 11025.0], dtype=torch.float64)
    for scale in ("slaney", "htk"):
        torch.testing.assert_close(mel_to_hz(hz_to_mel(f, scale), scale), f)


def _librosa_mel_numpy(sr, n_fft, n_mels, fmin, fmax, htk, norm):
    """librosa.filters.mel re-derived in numpy from its documented formulas."""

    def to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        if htk:
            return 2595.0 * np.log10(1.0 + f / 700.0)
        mels = f / (200.0 / 3)
        return np.where(
            f >= 1000, 15 + np.log(np.maximum(f, 1000) / 1000) / (np.log(6.4) / 27), mels
        )

    def to_hz(m):
        m = np.asarray(m, dtype=np.float64)
        if htk:
            return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
        return np.where(m >= 15, 1000 * np.exp(np.log(6.4) / 27 * (m - 15)), m * 200.0 / 3)

    fftfreqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    mel_f = to_hz(np.linspace(to_mel(fmin), to_mel(fmax), n_mels + 2))
    weights = np.zeros((n_mels, len(fftfreqs)))
    for i in range(n_mels):
        left, centre, right = mel_f[i], mel_f[i + 1], mel_f[i + 2]
        for j, f in enumerate(fftfreqs):
            if left < f <= centre:
                weights[i, j] = (f - left) / (centre - left)
            elif centre < f < right:
                weights[i, j] = (right - f) / (right - centre)
        if norm == "slaney":
            weights[i] *= 2.0 / (right - left)
    return weights


@pytest.mark.parametrize(
    "sr,n_fft,n_mels,fmin,fmax,scale,norm",
    [
        (16000, 512, 40, 0.0, None, "slaney", "slaney"),
        (24000, 256, 20, 50.0, 10000.0, "htk", None),
        (22050, 1024, 64, 0.0, None, "htk", "slaney"),
    ],
)
def test_filterbank_matches_librosa_formula(sr, n_fft, n_mels, fmin, fmax, scale, norm):
    fb = mel_filterbank(sr, n_fft, n_mels, fmin, fmax, norm=norm, mel_scale=scale)
    assert fb.shape == (n_mels, n_fft // 2 + 1) and fb.dtype == torch.float32
    ref = _librosa_mel_numpy(
        sr, n_fft, n_mels, fmin, sr / 2 if fmax is None else fmax, scale == "htk", norm
    )
    np.testing.assert_allclose(fb.numpy(), ref, rtol=1e-5, atol=1e-7)


def test_filterbank_triangles_peak_at_centres_and_sum_to_one():
    sr, n_fft, n_mels = 16000, 2048, 24
    fb = mel_filterbank(sr, n_fft, n_mels, norm=None, mel_scale="htk")
    freqs = torch.linspace(0, sr / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(0, float(hz_to_mel(sr / 2, "htk")), n_mels + 2, dtype=torch.float64)
    # Filter i peaks at the centre frequency centres[i] (height 1 there, exactly).
    centres = mel_to_hz(mels, "htk")[1:-1]
    assert fb.max() <= 1.0 + 1e-6 and fb.min() >= 0.0
    for i in range(n_mels):
        row = fb[i]
        peak = int(row.argmax())
        below = int(centres[i] // (sr / n_fft))  # the two bins around the centre frequency
        assert peak in (below, below + 1)
        assert row[peak] > 0.9
        support = row.nonzero().flatten()
        assert (support.diff() == 1).all()  # one contiguous run
        assert (row[support[0] : peak + 1].diff() >= 0).all()  # rising ...
        assert (row[peak : support[-1] + 1].diff() <= 0).all()  # ... then falling
    # Between the first and last centre the triangles form a partition of unity.
    inside = (freqs > centres[0]) & (freqs < centres[-1])
    torch.testing.assert_close(
        fb.sum(0)[inside].double(), torch.ones(int(inside.sum()), dtype=torch.float64)
    )


def test_slaney_norm_gives_unit_area():
    sr, n_fft = 16000, 4096
    fb = mel_filterbank(sr, n_fft, 16)  # wide filters: the Riemann sum is accurate
    bin_hz = sr / n_fft
    torch.testing.assert_close(fb.sum(1) * bin_hz, torch.ones(16), atol=2e-3, rtol=0)


def test_filterbank_rejects_bad_range():
    with pytest.raises(ValueError, match="f_max"):
        mel_filterbank(16000, 512, 40, f_max=9000.0)


def test_stft_magnitude_shape_and_peak():
    sr, n_fft, hop = 8000, 256, 64
    t = torch.arange(2048) / sr
    k = 20  # a sine exactly on bin 20
    x = torch.stack([torch.sin(2 * math.pi * k * sr / n_fft * t), torch.zeros(2048)])  # (2, T)
    mag = stft_magnitude(x, n_fft, hop)
    assert mag.shape == (2, n_fft // 2 + 1, 2048 // hop + 1) and mag.dtype == torch.float32
    assert (mag[0, :, 4:-4].argmax(0) == k).all()
    assert mag[1].abs().max() == 0
    torch.testing.assert_close(stft_magnitude(x[:, None], n_fft, hop), mag)
    with pytest.raises(ValueError, match="mono"):
        stft_magnitude(torch.zeros(2, 2, 100), n_fft, hop)


def test_mel_spectrogram_module():
    mel = MelSpectrogram(16000, n_fft=256, hop_length=64, n_mels=20)
    x = torch.randn(3, 1, 1000)
    out = mel(x)
    assert out.shape == (3, 20, 1000 // 64 + 1) and out.dtype == torch.float32
    assert (out >= 0).all()
    assert mel.state_dict() == {}  # window and filterbank are rebuilt, not saved
    torch.testing.assert_close(mel(x[:, 0]), out)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = mel(x.bfloat16())
    assert out_bf16.dtype == torch.float32 and torch.isfinite(out_bf16).all()
    power = MelSpectrogram(16000, n_fft=256, hop_length=64, n_mels=20, power=2.0)
    torch.testing.assert_close(
        power(x), torch.matmul(mel.filterbank, stft_magnitude(x, 256, 64).square())
    )
    rebuilt = build_module(module_config(mel))
    torch.testing.assert_close(rebuilt(x), out)


def test_stft_magnitude_gradient_finite_for_silence():
    x = torch.zeros(1, 512, requires_grad=True)
    stft_magnitude(x, 128, 32).clamp_min(1e-5).log().sum().backward()
    assert torch.isfinite(x.grad).all()
