"""Experiment loggers: W&B that goes offline by itself, and media logging for any logger.

:class:`WandbLogger` is Lightning's, with ``mode="auto"``: online when W&B
credentials exist (``WANDB_API_KEY`` or a ``~/.netrc`` entry for the W&B host),
offline otherwise — never a prompt, never a network wait. ``WANDB_MODE`` (e.g.
``disabled``) still wins. Runs are written under ``save_dir`` (the CLI sets it to
``trainer.default_root_dir`` when a recipe leaves it empty).

:func:`log_audio` and :func:`log_image` send media to whichever logger is in use:
W&B (``wandb.Audio``/``wandb.Image``), TensorBoard (``add_audio``/``add_image``), or
files under the logger's directory for loggers that store no media (CSV).
"""

from __future__ import annotations

import netrc
import os
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

import numpy as np
from lightning.pytorch.loggers import WandbLogger as _LightningWandbLogger

__all__ = ["WandbLogger", "has_wandb_credentials", "log_audio", "log_image"]


def has_wandb_credentials() -> bool:
    """Whether W&B could log in without asking: an API key in the environment or ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = (
        urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
        or "api.wandb.ai"
    )
    try:
        return netrc.netrc().authenticators(host) is not None
    except (FileNotFoundError, netrc.NetrcParseError, OSError):
        return False


class WandbLogger(_LightningWandbLogger):
    """Lightning's ``WandbLogger`` that runs offline when there are no credentials.

    Args:
        mode: ``"auto"`` (online with credentials, else offline), ``"online"``, ``"offline"``
            or ``"disabled"``. The ``WANDB_MODE`` environment variable overrides it.
        **kwargs: Lightning's ``WandbLogger`` arguments (``project``, ``name``, ``group``,
            ``tags``, ``save_dir``, ...), passed on.
    """

    def __init__(
        self, mode: Literal["auto", "online", "offline", "disabled"] = "auto", **kwargs: Any
    ):
        env = os.environ.get("WANDB_MODE")
        chosen = env or (
            ("online" if has_wandb_credentials() else "offline") if mode == "auto" else mode
        )
        if chosen == "disabled":
            kwargs["mode"] = "disabled"
        kwargs["offline"] = chosen in ("offline", "dryrun")
        self.mode = chosen
        super().__init__(**kwargs)
        init = getattr(self, "_wandb_init", {})
        if init.get("anonymous") is None:  # wandb >= 0.2x warns about the key, even as None
            init.pop("anonymous", None)

    @property
    def experiment(self):  # type: ignore[override]
        """The W&B run, created on first use in ``save_dir`` (made first: wandb warns
        "git root ... does not exist" when its folder is missing)."""
        if self._experiment is None:
            folder = getattr(self, "_wandb_init", {}).get("dir")
            if folder:
                os.makedirs(folder, exist_ok=True)
        return super().experiment

    def finalize(self, status: str) -> None:
        """Finish the W&B run when training ends, so an offline run is complete on disk."""
        super().finalize(status)
        if self._experiment is not None and hasattr(self._experiment, "finish"):
            self._experiment.finish(exit_code=0 if status == "success" else 1)
            self._experiment = None


def _media_dir(logger) -> Path:
    base = getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) or "."
    return Path(base) / "media"


def log_audio(
    logger, key: str, audio: np.ndarray, sample_rate: int, step: int, caption: str | None = None
) -> None:
    """Log a mono clip ``(T,)`` in [-1, 1] under ``key``."""
    audio = np.clip(np.asarray(audio, dtype=np.float32), -1.0, 1.0)
    if isinstance(logger, _LightningWandbLogger):
        import wandb

        logger.experiment.log(
            {
                key: wandb.Audio(audio, sample_rate=sample_rate, caption=caption),
                "trainer/global_step": step,
            }
        )
        return
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_audio"):
        experiment.add_audio(key, audio[None], step, sample_rate=sample_rate)
        return
    import soundfile as sf

    path = _media_dir(logger) / f"step{step:08d}" / f"{key.replace('/', '_')}.wav"
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, audio, sample_rate)


def log_image(logger, key: str, image: np.ndarray, step: int, caption: str | None = None) -> None:
    """Log an RGB image ``(H, W, 3)`` uint8 under ``key``."""
    if isinstance(logger, _LightningWandbLogger):
        import wandb

        logger.experiment.log(
            {key: wandb.Image(image, caption=caption), "trainer/global_step": step}
        )
        return
    experiment = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_image"):
        experiment.add_image(key, image, step, dataformats="HWC")
        return
    from PIL import Image

    path = _media_dir(logger) / f"step{step:08d}" / f"{key.replace('/', '_')}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path)
