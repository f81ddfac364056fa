"""bf16 autocast on CPU: discriminators, losses and the quantizer stay finite, over many seeds.

Property tests: every case runs over several seeds (weights and input drawn from each) and
input lengths, at tiny sizes and at the sizes the recipes use, including configurations no
other test builds. The oneDNN bf16 kernel that computes garbage for a strided convolution
with one output column (see ``lit_codec.nn.conv2d``) made ~half of such draws non-finite.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from lit_codec.nn.conv2d import Conv2d, conv2d
from lit_codec.nn.discriminators import (
    CombinedDiscriminator,
    MultiBandMultiScaleSTFTDiscriminator,
    MultiPeriodDiscriminator,
    MultiScaleSTFTDiscriminator,
    MultiScaleWaveformDiscriminator,
    STFTDiscriminator,
)
from lit_codec.nn.losses import (
    AdversarialLoss,
    MultiResolutionSTFTLoss,
    MultiScaleMelLoss,
    WaveformL1Loss,
    feature_matching_loss,
)
from lit_codec.nn.quantization import ResidualVectorQuantizer


def bf16():
    return torch.autocast("cpu", dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# the convolution itself, against float64
# ---------------------------------------------------------------------------------------------

# Widths, kernels, strides and paddings around the degenerate case (one output column).
CONV_SHAPES = [
    (w, k, s, p)
    for w, k, s in itertools.product((1, 2, 3, 5, 9), (3, 9), (2, 3))
    for p in (0, k // 2)
    if w + 2 * p >= k
]


@pytest.mark.parametrize("channels", [2, 32])
def test_conv2d_in_bf16_matches_float64(channels):
    wrong = []
    for w, k, s, p in CONV_SHAPES:
        x = torch.randn(2, channels, 7, w)
        weight = torch.randn(channels, channels, 3, k) / (3 * k * channels) ** 0.5
        bias = torch.randn(channels)
        xb, wb = x.bfloat16(), weight.bfloat16().requires_grad_()
        y = conv2d(xb, wb, bias.bfloat16(), (1, s), (1, p))  # (B, C, 7, W')
        ref_w = weight.double().requires_grad_()
        ref = F.conv2d(x.double(), ref_w, bias.double(), (1, s), (1, p))
        grad = torch.randn_like(ref)
        y.backward(grad.bfloat16())
        ref.backward(grad)
        scale = ref.abs().max() + 1
        ok = torch.isfinite(y).all() and (y.double() - ref).abs().max() < 0.05 * scale
        g_scale = ref_w.grad.abs().max() + 1
        ok = ok and (wb.grad.double() - ref_w.grad).abs().max() < 0.05 * g_scale
        if not ok:
            wrong.append((w, k, s, p, tuple(ref.shape)))
    assert not wrong, f"bf16 conv2d differs from float64 for (width, kernel, stride, pad): {wrong}"


def test_conv2d_module_under_autocast_and_weight_norm():
    conv = torch.nn.utils.parametrizations.weight_norm(Conv2d(4, 4, (3, 9), (1, 2), (1, 4)))
    x = torch.randn(3, 4, 6, 2)  # width 2 -> one output column
    with bf16():
        y = conv(x)  # (3, 4, 6, 1)
    ref = F.conv2d(x.double(), conv.weight.double(), conv.bias.double(), (1, 2), (1, 4))
    assert y.dtype == torch.bfloat16 and y.shape == ref.shape
    assert (y.double() - ref).abs().max() < 0.05 * (ref.abs().max() + 1)


def test_conv2d_refuses_padding_it_cannot_compute():
    with pytest.raises(ValueError, match="zero padding"):
        Conv2d(2, 2, 3, padding=1, padding_mode="reflect")
    with pytest.raises(ValueError, match="zero padding"):
        Conv2d(2, 2, 3, padding="same")


# ---------------------------------------------------------------------------------------------
# discriminators
# ---------------------------------------------------------------------------------------------

DISCRIMINATORS = {
    # tiny sizes (the unit tests' and smaller)
    "mrd_tiny": lambda: MultiBandMultiScaleSTFTDiscriminator(window_lengths=(256, 128), channels=2),
    "mrd_narrow": lambda: MultiBandMultiScaleSTFTDiscriminator((512, 128, 64, 32), channels=4),
    "msstft_tiny": lambda: MultiScaleSTFTDiscriminator(
        n_ffts=(256, 128, 64), hop_lengths=(64, 32, 16), win_lengths=(256, 128, 64), channels=2
    ),
    "stft_tiny": lambda: STFTDiscriminator(n_fft=256, hop_length=64, win_length=256, channels=2),
    "stft_128": lambda: STFTDiscriminator(n_fft=128, hop_length=32, win_length=128, channels=2),
    "msd_tiny": lambda: MultiScaleWaveformDiscriminator(
        channels=2, max_channels=16, downsample_factors=(4, 4)
    ),
    "mpd_tiny": lambda: MultiPeriodDiscriminator(periods=(2, 3, 5), channels=2, max_channels=16),
    # recipe sizes (class defaults, and the speech/24 kHz recipes' narrower critics)
    "recipe_speech": lambda: CombinedDiscriminator(
        (
            MultiScaleWaveformDiscriminator(channels=8, max_channels=256),
            STFTDiscriminator(channels=8, max_channels=64),
        )
    ),
    "recipe_mrd": lambda: MultiBandMultiScaleSTFTDiscriminator(),
    "recipe_msstft": lambda: MultiScaleSTFTDiscriminator(),
    "recipe_mpd": lambda: MultiPeriodDiscriminator(),
}
TINY = [k for k in DISCRIMINATORS if not k.startswith("recipe")]
RECIPE = [k for k in DISCRIMINATORS if k.startswith("recipe")]


def _check_discriminator(name: str, seeds: range, lengths: tuple[int, ...]) -> None:
    bad = []
    for seed in seeds:
        torch.manual_seed(seed)
        disc = DISCRIMINATORS[name]()
        for length in lengths:
            x = (0.3 * torch.randn(2, 1, length)).requires_grad_()
            with bf16():
                out = disc(x)
                loss = sum(logit.float().square().mean() for logit in out.logits)
            finite = all(torch.isfinite(t).all() for t in out.logits)
            finite &= all(torch.isfinite(f).all() for feats in out.features for f in feats)
            loss.backward()
            finite &= bool(torch.isfinite(x.grad).all())
            finite &= all(torch.isfinite(p.grad).all() for p in disc.parameters())
            disc.zero_grad()
            if not finite:
                bad.append((seed, length))
    assert not bad, f"{name}: non-finite under bf16 autocast for (seed, length) {bad}"


@pytest.mark.parametrize("name", TINY)
def test_tiny_discriminators_finite_under_bf16_over_seeds(name):
    _check_discriminator(name, range(12), (257, 2000))


@pytest.mark.slow
@pytest.mark.parametrize("name", RECIPE)
def test_recipe_discriminators_finite_under_bf16_over_seeds(name):
    _check_discriminator(name, range(3), (4000,))


def test_band_narrower_than_one_bin_is_refused():
    with pytest.raises(ValueError, match="empty band"):
        MultiBandMultiScaleSTFTDiscriminator(window_lengths=(16,), channels=2)


# ---------------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------------


def _signals(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(2, 1, 4000, generator=g)
    return [
        ("noise", 0.3 * noise),
        ("silence", torch.zeros(2, 1, 4000)),
        ("near-silence", 1e-6 * noise),
        ("clipped", (3 * noise).clamp(-1, 1)),
    ]


RECONSTRUCTION_LOSSES = {
    "mel": lambda: MultiScaleMelLoss(16000),
    "mel_tiny": lambda: MultiScaleMelLoss(16000, window_lengths=(16, 32), n_mels=(4, 8)),
    "stft": lambda: MultiResolutionSTFTLoss(),
    "stft_tiny": lambda: MultiResolutionSTFTLoss((32, 64), (8, 16), (32, 64)),
    "l1": lambda: WaveformL1Loss(),
}


@pytest.mark.parametrize("name", sorted(RECONSTRUCTION_LOSSES))
def test_reconstruction_losses_finite_under_bf16_over_seeds(name):
    loss_fn = RECONSTRUCTION_LOSSES[name]()
    bad = []
    for seed in range(6):
        for (a, target), (b, pred) in itertools.product(_signals(seed), repeat=2):
            y_hat = pred.bfloat16().requires_grad_()  # a decoder output under autocast
            with bf16():
                loss = loss_fn(y_hat, target)
            loss.backward()
            if not (torch.isfinite(loss) and torch.isfinite(y_hat.grad).all()):
                bad.append((seed, a, b))
    assert not bad, f"{name}: non-finite loss or gradient for (seed, target, prediction) {bad}"


@pytest.mark.parametrize("kind", ["hinge", "lsgan"])
def test_adversarial_and_feature_losses_finite_under_bf16_over_seeds(kind):
    adv = AdversarialLoss(kind)
    disc = DISCRIMINATORS["mrd_tiny"]()
    for seed in range(6):
        torch.manual_seed(seed)
        real = 0.3 * torch.randn(2, 1, 2000)
        for fake in (torch.zeros(2, 1, 2000), 0.3 * torch.randn(2, 1, 2000)):
            fake = fake.requires_grad_()
            with bf16():
                d_real, d_fake = disc(real), disc(fake)
                losses = [
                    adv.discriminator(d_real.logits, [t.detach() for t in d_fake.logits]),
                    adv.generator(d_fake.logits),
                    feature_matching_loss(d_real.features, d_fake.features),
                    feature_matching_loss(d_real.features, d_fake.features, relative=True),
                ]
            assert all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)
            sum(losses).backward()
            assert torch.isfinite(fake.grad).all()


# ---------------------------------------------------------------------------------------------
# quantizer
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dropout", ["none", "batch", "sample"])
def test_rvq_finite_under_bf16_over_seeds(dropout):
    for seed in range(6):
        rvq = ResidualVectorQuantizer(
            dim=8, n_q=4, codebook_size=16, quantizer_dropout=dropout, seed=seed
        ).train()
        torch.manual_seed(seed)
        for latent in (torch.randn(2, 8, 30), torch.zeros(2, 8, 30), 1e4 * torch.randn(2, 8, 30)):
            x = latent.bfloat16().requires_grad_()
            with bf16():
                out = rvq(x)
                loss = out.quantized.float().square().mean() + out.losses["vq/commit"]
            assert out.quantized.dtype == torch.bfloat16
            assert torch.isfinite(out.quantized).all() and torch.isfinite(loss), (seed, dropout)
            loss.backward()
            assert torch.isfinite(x.grad).all(), (seed, dropout)
            assert all(torch.isfinite(b).all() for b in rvq.buffers()), (seed, dropout)
