import pytest
import torch

from lit_codec.nn.configurable import build_module, module_config
from lit_codec.nn.losses import (
    AdversarialLoss,
    FeatureMatchingLoss,
    MultiResolutionCompressedSTFTLoss,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    STOILoss,
    WaveformL1Loss,
    feature_matching_loss,
)

SR = 16000
T = 4096


def _mel_loss():
    return MultiScaleMelLoss(SR, window_lengths=(32, 128, 512), n_mels=(5, 20, 80))


def _stft_loss():
    return MultiResolutionSTFTLoss(fft_sizes=(128, 256), hop_sizes=(32, 64), win_lengths=(128, 200))


@pytest.fixture(params=["mel", "stft"])
def rec_loss(request):
    return _mel_loss() if request.param == "mel" else _stft_loss()


def test_reconstruction_loss_zero_for_identical_positive_for_different(rec_loss):
    torch.manual_seed(0)
    y = torch.randn(2, 1, T)
    assert float(rec_loss(y, y.clone())) == pytest.approx(0.0, abs=1e-6)
    noisy = rec_loss(y + 0.3 * torch.randn_like(y), y)
    assert noisy.dim() == 0 and torch.isfinite(noisy) and noisy > 0.01
    # A worse reconstruction costs more.
    assert rec_loss(y + 1.0 * torch.randn_like(y), y) > noisy


def test_reconstruction_loss_finite_for_silence_with_gradient(rec_loss):
    y = torch.zeros(2, 1, T)
    y_hat = torch.zeros(2, 1, T, requires_grad=True)
    loss = rec_loss(y_hat, y)
    assert torch.isfinite(loss) and float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert torch.isfinite(y_hat.grad).all()
    # Sound against silence (and silence against sound) is finite too, with a gradient.
    y_hat = (0.1 * torch.randn(2, 1, T)).requires_grad_()
    loss = rec_loss(y_hat, y) + rec_loss(y, y_hat)
    loss.backward()
    assert torch.isfinite(loss) and loss > 0
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0


def test_reconstruction_loss_under_bf16_autocast(rec_loss):
    torch.manual_seed(1)
    y = torch.randn(2, 1, T)
    y_hat = (y + 0.2 * torch.randn_like(y)).requires_grad_()
    ref = rec_loss(y_hat, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = rec_loss(y_hat, y)  # float32 inputs: spectra stay in float32
        low = rec_loss(y_hat.bfloat16(), y.bfloat16())  # bf16 inputs are upcast
    assert same.dtype == torch.float32 and low.dtype == torch.float32
    torch.testing.assert_close(same, ref)
    assert torch.isfinite(low) and float(low.detach()) == pytest.approx(
        float(ref.detach()), rel=0.05
    )
    low.backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0


def test_mel_loss_matches_hand_computation_of_one_scale():
    torch.manual_seed(2)
    y, y_hat = torch.randn(1, 1, 1024), torch.randn(1, 1, 1024)
    loss = MultiScaleMelLoss(
        SR, window_lengths=(256,), n_mels=(20,), log_weight=2.0, linear_weight=0.5
    )
    m, m_hat = loss.mels[0](y), loss.mels[0](y_hat)
    expected = (
        0.5 * (m_hat - m).abs().mean()
        + 2.0 * (m_hat.clamp_min(1e-5).log10() - m.clamp_min(1e-5).log10()).abs().mean()
    )
    torch.testing.assert_close(loss(y_hat, y), expected)
    assert loss.mels[0].hop_length == 64


def test_reconstruction_losses_rebuild_from_config_and_reject_shape_mismatch():
    for loss in (_mel_loss(), _stft_loss(), WaveformL1Loss()):
        rebuilt = build_module(module_config(loss))
        y, y_hat = torch.randn(1, 1, 2048), torch.randn(1, 1, 2048)
        torch.testing.assert_close(rebuilt(y_hat, y), loss(y_hat, y))
        with pytest.raises(ValueError, match="same shape"):
            loss(y_hat[..., :-1], y)
    assert _mel_loss().state_dict() == {}


def test_stft_loss_matches_hand_computation():
    torch.manual_seed(3)
    y, y_hat = torch.randn(2, 1, 1024), torch.randn(2, 1, 1024)
    loss = MultiResolutionSTFTLoss(fft_sizes=(128,), hop_sizes=(32,), win_lengths=(128,))
    w = torch.hann_window(128)

    def mag(x):
        spec = torch.stft(x[:, 0], 128, 32, 128, w, return_complex=True)
        return (spec.real**2 + spec.imag**2).clamp_min(1e-7).sqrt()

    s, s_hat = mag(y), mag(y_hat)
    expected = torch.norm(s - s_hat) / torch.norm(s) + (s.log() - s_hat.log()).abs().mean()
    torch.testing.assert_close(loss(y_hat, y), expected)


def test_waveform_l1():
    y = torch.tensor([[[0.0, 1.0, -1.0, 2.0]]])
    y_hat = torch.tensor([[[1.0, 1.0, 1.0, 0.0]]])
    assert float(WaveformL1Loss()(y_hat, y)) == pytest.approx((1 + 0 + 2 + 2) / 4)


REAL = [torch.tensor([0.5, 2.0]), torch.tensor([[-1.0]])]
FAKE = [torch.tensor([-2.0, 0.0]), torch.tensor([[0.5]])]


def test_hinge_losses_by_hand():
    adv = AdversarialLoss("hinge")
    # D: sub 1: mean(relu(1-[.5, 2])) + mean(relu(1+[-2, 0])) = .25 + .5; sub 2: 2 + 1.5
    assert float(adv.discriminator(REAL, FAKE)) == pytest.approx((0.75 + 3.5) / 2)
    # G: sub 1: mean(relu(1-[-2, 0])) = 2; sub 2: relu(1 - .5) = .5
    assert float(adv.generator(FAKE)) == pytest.approx((2.0 + 0.5) / 2)


def test_lsgan_losses_by_hand():
    adv = AdversarialLoss("lsgan")
    # D: sub 1: mean([.25, 1]) + mean([4, 0]) = 2.625; sub 2: 4 + .25
    assert float(adv.discriminator(REAL, FAKE)) == pytest.approx((2.625 + 4.25) / 2)
    # G: sub 1: mean([9, 1]) = 5; sub 2: .25
    assert float(adv.generator(FAKE)) == pytest.approx((5.0 + 0.25) / 2)
    assert build_module(module_config(adv)).kind == "lsgan"


def test_adversarial_loss_checks_inputs_and_upcasts():
    adv = AdversarialLoss()
    with pytest.raises(ValueError, match="real but"):
        adv.discriminator(REAL, FAKE[:1])
    with pytest.raises(ValueError, match="kind"):
        AdversarialLoss("wgan")
    out = adv.generator([f.bfloat16() for f in FAKE])
    assert out.dtype == torch.float32


def test_feature_matching_by_hand_and_real_detached():
    real = [
        [torch.tensor([1.0, -2.0], requires_grad=True), torch.tensor([[4.0]], requires_grad=True)],
        [torch.tensor([0.5, 0.5, 0.5, 0.5], requires_grad=True)],
    ]
    fake = [
        [torch.tensor([0.0, 0.0], requires_grad=True), torch.tensor([[1.0]], requires_grad=True)],
        [torch.tensor([0.5, 1.5, 0.5, -0.5], requires_grad=True)],
    ]
    # layer L1s: mean(|[1, -2]|) = 1.5; |4 - 1| = 3; mean([0, 1, 0, 1]) = .5 -> mean over 3 layers
    loss = feature_matching_loss(real, fake)
    assert float(loss.detach()) == pytest.approx((1.5 + 3.0 + 0.5) / 3)
    loss.backward()
    assert all(r.grad is None for sub in real for r in sub)
    assert all(f.grad is not None and f.grad.abs().sum() > 0 for sub in fake for f in sub)
    # relative: each layer divided by mean |real|: 1.5 / 1.5, 3 / 4, .5 / .5
    rel = FeatureMatchingLoss(relative=True)(real, fake)
    assert float(rel.detach()) == pytest.approx((1.0 + 0.75 + 1.0) / 3)
    # silent real features give a finite relative loss
    zero = [[torch.zeros(3)]]
    assert torch.isfinite(feature_matching_loss(zero, [[torch.ones(3)]], relative=True))
    with pytest.raises(ValueError, match="shapes differ"):
        feature_matching_loss([[torch.zeros(2)]], [[torch.zeros(3)]])


def _compressed_loss(**kwargs):
    args = dict(fft_sizes=(128, 256), hop_sizes=(32, 64), win_lengths=(128, 200))
    args.update(kwargs)
    return MultiResolutionCompressedSTFTLoss(**args)


def test_compressed_stft_loss_zero_for_identical_positive_for_different():
    torch.manual_seed(4)
    loss = _compressed_loss()
    y = torch.randn(2, 1, T)
    assert float(loss(y, y.clone())) == pytest.approx(0.0, abs=1e-10)
    noisy = loss(y + 0.3 * torch.randn_like(y), y)
    assert noisy.dim() == 0 and noisy.dtype == torch.float32 and noisy > 0.01
    assert loss(y + 1.0 * torch.randn_like(y), y) > noisy
    # The complex term sees phase: -y has y's magnitudes but opposite phase.
    magnitude_only = _compressed_loss(magnitude_weight=1.0, complex_weight=0.0)
    complex_only = _compressed_loss(magnitude_weight=0.0, complex_weight=1.0)
    assert float(magnitude_only(-y, y)) == pytest.approx(0.0, abs=1e-6)
    assert complex_only(-y, y) > 1.0


def test_compressed_stft_loss_matches_hand_computation():
    torch.manual_seed(5)
    y, y_hat = torch.randn(2, 1, 1024), torch.randn(2, 1, 1024)
    loss = MultiResolutionCompressedSTFTLoss(
        fft_sizes=(128,), hop_sizes=(32,), win_lengths=(128,), power=0.3,
        magnitude_weight=2.0, complex_weight=0.5, eps=1e-8,
    )  # fmt: skip

    def compressed(x):
        spec = torch.stft(x[:, 0], 128, 32, 128, torch.hann_window(128), return_complex=True)
        mag = (spec.abs().square() + 1e-8).sqrt()
        return mag.pow(0.3), spec * mag.pow(0.3 - 1)

    (m, c), (m_hat, c_hat) = compressed(y), compressed(y_hat)
    expected = 2.0 * (m_hat - m).square().mean() + 0.5 * (c_hat - c).abs().square().mean()
    torch.testing.assert_close(loss(y_hat, y), expected)


def test_compressed_stft_loss_is_differentiable_at_silence():
    loss = _compressed_loss()
    silence = torch.zeros(2, 1, T)
    y_hat = torch.zeros(2, 1, T, requires_grad=True)
    value = loss(y_hat, silence)
    value.backward()
    assert float(value.detach()) == pytest.approx(0.0, abs=1e-10)
    assert torch.isfinite(y_hat.grad).all()
    # Sound against silence and silence against sound: finite, with a gradient.
    y_hat = (0.1 * torch.randn(2, 1, T)).requires_grad_()
    value = loss(y_hat, silence) + loss(silence, y_hat)
    value.backward()
    assert torch.isfinite(value) and value > 0
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="eps > 0"):
        _compressed_loss(eps=0.0)


def test_compressed_stft_loss_under_bf16_autocast_and_rebuilt_from_config():
    torch.manual_seed(6)
    loss = _compressed_loss()
    y = torch.randn(2, 1, T)
    y_hat = (y + 0.2 * torch.randn_like(y)).requires_grad_()
    ref = loss(y_hat, y)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        same = loss(y_hat, y)
        low = loss(y_hat.bfloat16(), y.bfloat16())
    assert same.dtype == torch.float32 and low.dtype == torch.float32
    torch.testing.assert_close(same, ref)
    assert torch.isfinite(low) and float(low.detach()) == pytest.approx(
        float(ref.detach()), rel=0.05
    )
    low.backward()
    assert torch.isfinite(y_hat.grad).all() and y_hat.grad.abs().sum() > 0
    rebuilt = build_module(module_config(loss))
    torch.testing.assert_close(rebuilt(y_hat, y), ref)
    with pytest.raises(ValueError, match="same shape"):
        loss(y_hat[..., :-1], y)


@pytest.mark.parametrize(
    "make",
    [
        lambda: MultiScaleMelLoss(16000, window_lengths=(64, 256), n_mels=(8, 32)),
        lambda: MultiResolutionSTFTLoss((64, 256), (16, 64), (64, 256)),
        lambda: MultiResolutionCompressedSTFTLoss((64, 256), (16, 64), (64, 256)),
        lambda: STOILoss(8000, segment=8, bands=14),
    ],
    ids=["mel", "stft", "compressed", "stoi"],
)
def test_target_without_gradient_gives_the_same_loss_and_gradient(make):
    # a target that needs no gradient skips autograd; one that does goes through with y_hat
    loss_fn = make()
    y = 0.1 * torch.randn(3, 1, 2000)
    y_hat = (y + 0.02 * torch.randn_like(y)).requires_grad_()
    fast = loss_fn(y_hat, y)
    (grad_fast,) = torch.autograd.grad(fast, y_hat)
    y_tracked = y.clone().requires_grad_()
    slow = loss_fn(y_hat, y_tracked)
    grad_slow, grad_target = torch.autograd.grad(slow, (y_hat, y_tracked))
    torch.testing.assert_close(fast, slow)
    torch.testing.assert_close(grad_fast, grad_slow)
    assert grad_target.abs().sum() > 0  # the stacked path still differentiates the target


def _speech_clip():
    """A clip the repository ships (data_prep/samples/speech), at SR."""
    from pathlib import Path

    import soundfile as sf
    import soxr

    clip = (
        Path(__file__).resolve().parents[2] / "data_prep/samples/speech/en/en_vm-newpassword.flac"
    )
    audio, rate = sf.read(clip)
    return soxr.resample(audio, rate, SR) if rate != SR else audio


def test_stoi_loss_tracks_pystoi_on_speech():
    import numpy as np
    from pystoi import stoi

    x = _speech_clip()
    rng = np.random.default_rng(0)
    spectrum, freqs = np.fft.rfft(x), np.fft.rfftfreq(len(x), 1 / SR)
    noise = rng.standard_normal(len(x)) * np.sqrt(np.mean(x**2))
    degraded = {
        "10 dB": x + noise / np.sqrt(10),
        "0 dB": x + noise,
        "-5 dB": x + noise * np.sqrt(3.16),
        "lowpass 1 kHz": np.fft.irfft(spectrum * (freqs < 1000), len(x)),
        "lowpass 2 kHz": np.fft.irfft(spectrum * (freqs < 2000), len(x)),
    }
    loss = STOILoss(SR)
    clean = torch.tensor(x, dtype=torch.float32)[None]  # (1, T)
    assert float(loss(clean, clean)) == pytest.approx(0.0, abs=1e-6)
    assert float(loss(0.3 * clean, clean)) == pytest.approx(0.0, abs=1e-5)  # level-blind, as STOI
    ours = {}
    for name, y in degraded.items():
        ours[name] = 1 - float(loss(torch.tensor(y, dtype=torch.float32)[None], clean))
        assert ours[name] == pytest.approx(stoi(x, y, SR), abs=0.03), name
    assert (
        ours["10 dB"] > ours["0 dB"] > ours["-5 dB"]
        and ours["lowpass 2 kHz"] > ours["lowpass 1 kHz"]
    )


def test_stoi_loss_gradient_is_finite_on_silence_and_raises_the_score():
    loss = STOILoss(8000, segment=8, bands=14)
    silent = torch.zeros(2, 1, 4000, requires_grad=True)
    value = loss(silent, torch.zeros(2, 1, 4000))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(silent.grad).all()
    torch.manual_seed(0)
    clean = torch.randn(2, 1, 4000) * torch.linspace(0, 1, 4000)  # a rising envelope
    y_hat = (clean + 0.5 * torch.randn_like(clean)).requires_grad_()
    optimizer = torch.optim.Adam([y_hat], lr=1e-2)
    before = float(loss(y_hat, clean).detach())
    for _ in range(20):
        optimizer.zero_grad()
        loss(y_hat, clean).backward()
        optimizer.step()
    assert float(loss(y_hat, clean).detach()) < before - 0.02


def test_stoi_loss_refuses_short_audio_and_bands_past_nyquist_and_rebuilds_from_config():
    with pytest.raises(ValueError, match="at least 30 frames"):
        STOILoss(16000)(torch.zeros(1, 4000), torch.zeros(1, 4000))
    with pytest.raises(ValueError, match="use at most 14 bands"):
        STOILoss(8000)
    rebuilt = build_module(module_config(STOILoss(8000, segment=8, bands=14)))
    assert isinstance(rebuilt, STOILoss) and rebuilt.segment == 8
    y = torch.randn(1, 4000)
    assert float(rebuilt(y + 0.1, y)) == pytest.approx(
        float(STOILoss(8000, segment=8, bands=14)(y + 0.1, y))
    )
