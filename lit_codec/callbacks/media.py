"""Listen and look: audio pairs, spectrograms and codebook usage of validation, for dashboards.

:class:`ValidationMedia` logs, for the first ``num_clips`` clips of validation (the
same clips every time: validation is deterministic), on rank 0 only:

- ``audio/clip<i>/reference`` and ``audio/clip<i>/<kbps>kbps``: the clip and its
  reconstruction at each evaluated bitrate;
- ``spectrogram/clip<i>``: log-mel spectrograms of the clip and of each reconstruction,
  one above the other;
- ``vq/usage_histogram``: how often each code of each codebook was used during
  validation (sorted by frequency, one row per codebook, log scale).

Works with W&B, TensorBoard, or any logger (files in its folder), see :mod:`lit_codec.loggers`.
"""

from __future__ import annotations

import io

import lightning as L
import numpy as np
import torch

from lit_codec.callbacks.cadence import ValidationCadence
from lit_codec.loggers import log_audio, log_image

__all__ = ["ValidationMedia", "codebook_usage_image", "spectrogram_image"]


def _figure_to_array(fig) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80, bbox_inches="tight")
    buffer.seek(0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def spectrogram_image(clips: dict[str, np.ndarray], sample_rate: int) -> np.ndarray:
    """Log-mel spectrograms of named mono clips, stacked, as an RGB image (H, W, 3) uint8."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lit_codec.nn.spectral import MelSpectrogram

    mel = MelSpectrogram(sample_rate, n_fft=1024, hop_length=256, n_mels=80)
    fig, axes = plt.subplots(len(clips), 1, figsize=(8, 1.6 * len(clips)), squeeze=False)
    for ax, (name, clip) in zip(axes[:, 0], clips.items()):
        spec = mel(torch.as_tensor(clip, dtype=torch.float32)[None])[0]  # (n_mels, frames)
        ax.imshow(
            torch.log10(spec.clamp_min(1e-5)).numpy(),
            origin="lower",
            aspect="auto",
            cmap="magma",
            vmin=-5,
            vmax=1,
        )
        ax.set_ylabel(name, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    image = _figure_to_array(fig)
    plt.close(fig)
    return image


def codebook_usage_image(counts: np.ndarray) -> np.ndarray:
    """Code frequencies (n_q, codebook_size), each row sorted, log scale, as an RGB image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_q, size = counts.shape
    fig, ax = plt.subplots(figsize=(8, 0.4 * n_q + 1.2))
    freq = np.sort(counts, axis=1)[:, ::-1] / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    im = ax.imshow(
        np.log10(freq + 1e-6),
        aspect="auto",
        cmap="viridis",
        vmin=-6,
        vmax=0,
        interpolation="nearest",
    )
    ax.set_xlabel(f"codes sorted by use (of {size})")
    ax.set_ylabel("codebook")
    fig.colorbar(im, ax=ax, label="log10 frequency")
    image = _figure_to_array(fig)
    plt.close(fig)
    return image


class ValidationMedia(L.Callback):
    """Log audio, spectrograms and codebook usage of validation (rank 0).

    Args:
        num_clips: validation clips to log (the first ones, the same every time).
        every_n_validations: log one validation pass out of this many.
        spectrograms: log spectrogram images.
        codebook_histograms: log the codebook usage image.
    """

    def __init__(
        self,
        num_clips: int = 4,
        every_n_validations: int = 1,
        spectrograms: bool = True,
        codebook_histograms: bool = True,
    ):
        super().__init__()
        self.num_clips = num_clips
        self.every_n_validations = max(1, every_n_validations)
        self.spectrograms = spectrograms
        self.codebook_histograms = codebook_histograms
        self._cadence = ValidationCadence(self.every_n_validations)
        self._active = False
        self._logged = 0

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        due = self._cadence.due(trainer)
        self._active = due and trainer.is_global_zero and trainer.logger is not None
        self._logged = 0

    def on_validation_batch_end(
        self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx: int = 0
    ) -> None:
        if not self._active or not isinstance(outputs, dict) or "reconstructions" not in outputs:
            return
        rate = int(pl_module.sample_rate)
        step = trainer.global_step
        reference = outputs["reference"].detach().float().cpu()
        for i in range(reference.shape[0]):
            if self._logged >= self.num_clips:
                return
            n = int(outputs["lengths"][i])
            clips = {"reference": reference[i, 0, :n].numpy()}
            for label, audio in outputs["reconstructions"].items():
                clips[label] = audio[i, 0, :n].detach().float().cpu().numpy()
            for name, clip in clips.items():
                log_audio(trainer.logger, f"audio/clip{self._logged}/{name}", clip, rate, step)
            if self.spectrograms:
                log_image(
                    trainer.logger,
                    f"spectrogram/clip{self._logged}",
                    spectrogram_image(clips, rate),
                    step,
                )
            self._logged += 1

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        counts = getattr(
            pl_module, "val_code_counts", None
        )  # this rank's counts: no collective here
        if self._active and self.codebook_histograms and counts is not None and counts.sum() > 0:
            log_image(
                trainer.logger,
                "vq/usage_histogram",
                codebook_usage_image(counts.cpu().numpy()),
                trainer.global_step,
            )
