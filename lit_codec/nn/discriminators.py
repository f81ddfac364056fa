"""Codec GAN discriminators: one interface, waveform ``(B, 1, T)`` in, logits and features out.

This module defines what every discriminator returns (:class:`DiscriminatorOutput`), the
:class:`CombinedDiscriminator` a recipe injects as ``discriminator``, and re-exports the
discriminators themselves, so recipes name them all as ``lit_codec.nn.discriminators.<Class>``:

- :class:`MultiScaleWaveformDiscriminator`: MelGAN's multi-scale waveform discriminator
  (Kumar et al. 2019), the waveform critic of SoundStream.
- :class:`STFTDiscriminator`: SoundStream's STFT discriminator (Zeghidour et al. 2021).
- :class:`MultiPeriodDiscriminator`: HiFi-GAN's multi-period discriminator (Kong et al. 2020).
- :class:`MultiScaleSTFTDiscriminator`: EnCodec's MS-STFT discriminator (Défossez et al. 2022).
- :class:`MultiBandMultiScaleSTFTDiscriminator`: descript-audio-codec's multi-band,
  multi-resolution STFT discriminator (Kumar et al. 2023).

The waveform ones live in :mod:`lit_codec.nn.discriminators_waveform`, the STFT ones in
:mod:`lit_codec.nn.discriminators_spectral`. Those modules import the shared pieces below, so
the re-export is lazy (a module ``__getattr__``): either side may be imported first.

Convolutions carry weight norm (spectral norm or none as options); activations are LeakyReLU
with each original's slope (0.2 for MelGAN, SoundStream and EnCodec, 0.1 for HiFi-GAN and DAC).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from torch import Tensor, nn
from torch.nn.utils import parametrizations

from lit_codec.nn.configurable import Configurable

if TYPE_CHECKING:
    from lit_codec.nn.discriminators_spectral import (
        MultiBandMultiScaleSTFTDiscriminator,
        MultiScaleSTFTDiscriminator,
        STFTDiscriminator,
    )
    from lit_codec.nn.discriminators_waveform import (
        MultiPeriodDiscriminator,
        MultiScaleWaveformDiscriminator,
    )

__all__ = [
    "CombinedDiscriminator",
    "DiscriminatorOutput",
    "MultiBandMultiScaleSTFTDiscriminator",
    "MultiPeriodDiscriminator",
    "MultiScaleSTFTDiscriminator",
    "MultiScaleWaveformDiscriminator",
    "STFTDiscriminator",
]

_REEXPORTS = {
    "MultiScaleWaveformDiscriminator": "lit_codec.nn.discriminators_waveform",
    "MultiPeriodDiscriminator": "lit_codec.nn.discriminators_waveform",
    "STFTDiscriminator": "lit_codec.nn.discriminators_spectral",
    "MultiScaleSTFTDiscriminator": "lit_codec.nn.discriminators_spectral",
    "MultiBandMultiScaleSTFTDiscriminator": "lit_codec.nn.discriminators_spectral",
}

Norm = Literal["weight_norm", "spectral_norm", "none"]


@dataclass
class DiscriminatorOutput:
    """What every discriminator returns, one entry per sub-discriminator in each list.

    Attributes:
        logits: per sub-discriminator, its logits (any shape starting with the batch ``B``).
        features: per sub-discriminator, every intermediate feature map (after its activation,
            before the final logits layer), for the feature-matching loss.
        names: a short name per sub-discriminator for logging, e.g. ``"msd_2x"``, ``"mpd_p3"``.
    """

    logits: list[Tensor]
    features: list[list[Tensor]]
    names: list[str]

    def __post_init__(self) -> None:
        if not len(self.logits) == len(self.features) == len(self.names):
            raise ValueError(
                f"got {len(self.logits)} logits, {len(self.features)} feature lists and "
                f"{len(self.names)} names; expected one of each per sub-discriminator"
            )


# ---------------------------------------------------------------------------------------------
# Combination
# ---------------------------------------------------------------------------------------------


class CombinedDiscriminator(Configurable, nn.Module):
    """Runs several discriminators on the same waveform and concatenates their outputs.

    A name that occurs twice (the same discriminator class listed twice) gets the index of
    its discriminator appended, so logged names stay unique.

    Args:
        discriminators: the discriminators to run, each returning a
            :class:`DiscriminatorOutput`.
    """

    def __init__(self, discriminators: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(discriminators) == 0:
            raise ValueError("CombinedDiscriminator needs at least one discriminator")
        self.discriminators = nn.ModuleList(discriminators)

    def forward(self, x: Tensor) -> DiscriminatorOutput:
        """Waveform ``(B, 1, T)`` → the logits, features and names of all discriminators in order."""
        outputs = [d(x) for d in self.discriminators]
        all_names = [n for out in outputs for n in out.names]
        logits, features, names = [], [], []
        for i, out in enumerate(outputs):
            logits.extend(out.logits)
            features.extend(out.features)
            names.extend(n if all_names.count(n) == 1 else f"{n}_{i}" for n in out.names)
        return DiscriminatorOutput(logits, features, names)


# ---------------------------------------------------------------------------------------------
# Helpers shared by the discriminator modules
# ---------------------------------------------------------------------------------------------


def normed_conv(module: nn.Module, norm: Norm) -> nn.Module:
    """Wrap a conv's weight in weight norm or spectral norm (or leave it plain)."""
    if norm == "weight_norm":
        return parametrizations.weight_norm(module)
    if norm == "spectral_norm":
        return parametrizations.spectral_norm(module)
    if norm == "none":
        return module
    raise ValueError(f"norm must be 'weight_norm', 'spectral_norm' or 'none', got {norm!r}")


def check_waveform(x: Tensor) -> None:
    """Raise a clear error unless ``x`` is a mono waveform batch ``(B, 1, T)``."""
    if x.dim() != 3 or x.shape[1] != 1:
        raise ValueError(f"expected a mono waveform (B, 1, T), got shape {tuple(x.shape)}")


def run_sub_discriminators(
    nets: Sequence[nn.Module], names: list[str], x: Tensor
) -> DiscriminatorOutput:
    """Run each sub-discriminator ``net(x) -> (logits, features)`` on the waveform ``x``."""
    check_waveform(x)
    logits, features = [], []
    for net in nets:
        out, feats = net(x)
        logits.append(out)
        features.append(feats)
    return DiscriminatorOutput(logits, features, list(names))


def __getattr__(name: str) -> Any:
    # Lazy re-export of the discriminators (see the module docstring).
    module = _REEXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_REEXPORTS))
