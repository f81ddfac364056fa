"""Codebook patterns: how a ``(B, frames, n_q)`` token grid becomes one transformer sequence.

A codec frame holds ``n_q`` tokens (one per codebook). Language models over such frames
differ in how they order them; the pattern is a small plug-in (audiocraft's
``CodebooksPatternProvider`` idea) that :class:`~lit_codec.nn.multiscale_lm.MultiScaleLM`
asks two things, so that the model never knows which pattern it runs:

- :meth:`~CodebookPattern.layout`: which cells of the grid enter the global stack at each of
  its ``S`` steps: ``(B, frames + 1, n_q) -> (B, S, m)``, ``m`` cells per step whose
  embeddings are summed (``m = n_q``, or 1 for ``flat``). Row ``frames`` of the input is
  the *empty* row: one "no token here" cell per codebook, used where a step holds no cell
  of the grid (delay's ragged ends, the positions after the last frame);
- :meth:`~CodebookPattern.readback`: which step's output predicts each cell:
  ``(B, S, W) -> (B, frames, n_q, W)`` (or ``(B, frames, 1, W)`` for ``multiscale``, whose
  local stack expands the one vector of a frame into ``n_q``).

The contract every pattern keeps (``tests/nn/test_multiscale_lm.py`` checks it): the
prediction at row ``t``, codebook ``k`` is for cell ``(t + 1, k)``, and it depends only on
cells that come strictly earlier in the pattern's :meth:`~CodebookPattern.order`
(the step at which a cell is generated):

============  ==================  ===================================================
pattern       order of ``(f, k)``  the prediction of ``(t + 1, k)`` sees
============  ==================  ===================================================
multiscale    ``f * n_q + k``     frames ``<= t`` and codebooks ``< k`` of frame ``t + 1``
flat          ``f * n_q + k``     the same, through one sequence of ``frames * n_q`` steps
delay         ``f + k``           codebook ``j`` of frames ``<= t + k - j`` (MusicGen)
parallel      ``f``               frames ``<= t``
============  ==================  ===================================================

Cells the prediction would see that lie past the last frame (row ``frames - 1``, and for
``delay`` the last rows of codebooks ``k >= 2``) are the empty cell. Train on rows
``0 .. frames - 2`` (targets: frames ``1 ..``); the last row's codebook 0 is the next frame's
first prediction.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from lit_codec.nn.configurable import Configurable

__all__ = [
    "PATTERNS",
    "CodebookPattern",
    "DelayPattern",
    "FlatPattern",
    "MultiScalePattern",
    "ParallelPattern",
    "get_pattern",
]


class CodebookPattern(Configurable):
    """How a frame grid is laid out for the global stack and read back; see the module doc.

    A pattern is stateless: ``frames`` and ``n_q`` come with every call. Subclasses set
    ``name``, ``local`` (whether the model runs its local stack over the codebooks of a
    frame) and ``frame_steps`` (whether step ``s`` holds exactly frame ``s``, so frames can
    be fed one at a time when decoding).
    """

    name: ClassVar[str] = ""
    local: ClassVar[bool] = False
    frame_steps: ClassVar[bool] = False

    def steps(self, frames: int, n_q: int) -> int:
        """Length ``S`` of the global sequence for ``frames`` frames."""
        raise NotImplementedError

    def layout(self, grid: Tensor) -> Tensor:
        """Cells of each global step: ``(B, frames + 1, n_q, ...) -> (B, S, m, ...)``.

        ``grid`` may hold anything per cell (embedding rows, flags, frame numbers); its last
        row is the empty row.
        """
        raise NotImplementedError

    def readback(self, h: Tensor, frames: int, n_q: int) -> Tensor:
        """Outputs predicting cell ``(t + 1, k)``: ``(B, S, W) -> (B, frames, n_q or 1, W)``."""
        raise NotImplementedError

    def order(self, frames: int, n_q: int) -> Tensor:
        """``(frames, n_q)`` generation step of each cell: a prediction sees smaller ones."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class MultiScalePattern(CodebookPattern):
    """UniAudio/MEGABYTE/Moshi: one global step per frame, a local stack over its codebooks.

    The global input of frame ``f`` sums the embeddings of its ``n_q`` tokens; the global
    output of frame ``t`` starts the local stack that predicts frame ``t + 1`` codebook by
    codebook.
    """

    name = "multiscale"
    local = True
    frame_steps = True

    def steps(self, frames: int, n_q: int) -> int:
        return frames

    def layout(self, grid: Tensor) -> Tensor:
        return grid[:, :-1]  # (B, F, n_q, ...)

    def readback(self, h: Tensor, frames: int, n_q: int) -> Tensor:
        return h[:, :, None]  # (B, F, 1, W)

    def order(self, frames: int, n_q: int) -> Tensor:
        return torch.arange(frames * n_q).view(frames, n_q)  # (F, n_q)


class ParallelPattern(MultiScalePattern):
    """Every codebook of frame ``t + 1`` predicted at once from the global output of frame ``t``.

    The delay pattern without the delay (MusicGen's ``parallel``): no local stack, so the
    codebooks of a frame are predicted independently of each other.
    """

    name = "parallel"
    local = False

    def readback(self, h: Tensor, frames: int, n_q: int) -> Tensor:
        return h[:, :, None].expand(-1, -1, n_q, -1)  # (B, F, n_q, W)

    def order(self, frames: int, n_q: int) -> Tensor:
        return torch.arange(frames)[:, None].expand(frames, n_q)  # (F, n_q)


class DelayPattern(CodebookPattern):
    """MusicGen's delay pattern: codebook ``k`` shifted ``k`` frames later.

    Step ``s`` sums the embeddings of codebook ``j`` of frame ``s - j`` (the empty cell
    where ``s - j`` is outside ``[0, frames)``), ``S = frames + n_q - 1``. The output of
    step ``s`` predicts every codebook at once: codebook ``k`` of frame ``s + 1 - k``. So
    codebook ``k`` of frame ``t + 1`` is read at step ``t + k``, having seen the lower
    codebooks of the same frame (and codebook ``j < k`` up to frame ``t + k - j``).
    """

    name = "delay"
    frame_steps = False

    def steps(self, frames: int, n_q: int) -> int:
        return frames + n_q - 1

    def layout(self, grid: Tensor) -> Tensor:
        B, rows, n_q = grid.shape[:3]
        frames = rows - 1
        S = self.steps(frames, n_q)
        s = torch.arange(S, device=grid.device)[:, None]  # (S, 1)
        k = torch.arange(n_q, device=grid.device)[None, :]  # (1, n_q)
        source = s - k  # (S, n_q) frame of codebook k at step s
        source = torch.where((source >= 0) & (source < frames), source, frames)  # (S, n_q)
        index = source.view(1, S, n_q, *([1] * (grid.dim() - 3)))
        index = index.expand(B, S, n_q, *grid.shape[3:])  # (B, S, n_q, ...)
        return grid.gather(1, index)  # (B, S, n_q, ...)

    def readback(self, h: Tensor, frames: int, n_q: int) -> Tensor:
        windows = h.unfold(1, frames, 1)  # (B, n_q, W, F): window k = steps k .. k + F - 1
        return windows.permute(0, 3, 1, 2)  # (B, F, n_q, W)

    def order(self, frames: int, n_q: int) -> Tensor:
        return torch.arange(frames)[:, None] + torch.arange(n_q)[None, :]  # (F, n_q)


class FlatPattern(CodebookPattern):
    """Every token its own step: ``frames * n_q`` steps in frame-major order, no local stack.

    Step ``s`` holds cell ``(s // n_q, s % n_q)``; ``n_q - 1`` empty steps follow the last
    frame so that every codebook of the row after it can be read
    (``S = (frames + 1) * n_q - 1``). The output of a step predicts the next step's token.
    """

    name = "flat"
    frame_steps = False

    def steps(self, frames: int, n_q: int) -> int:
        return (frames + 1) * n_q - 1

    def layout(self, grid: Tensor) -> Tensor:
        B, rows, n_q = grid.shape[:3]
        S = self.steps(rows - 1, n_q)
        cells = grid.reshape(B, rows * n_q, *grid.shape[3:])  # (B, (F + 1) * n_q, ...)
        return cells[:, :S, None]  # (B, S, 1, ...)

    def readback(self, h: Tensor, frames: int, n_q: int) -> Tensor:
        return h[:, n_q - 1 :].reshape(h.shape[0], frames, n_q, h.shape[-1])  # (B, F, n_q, W)

    def order(self, frames: int, n_q: int) -> Tensor:
        return torch.arange(frames * n_q).view(frames, n_q)  # (F, n_q)


PATTERNS: dict[str, type[CodebookPattern]] = {
    cls.name: cls for cls in (MultiScalePattern, FlatPattern, DelayPattern, ParallelPattern)
}


def get_pattern(pattern: str | CodebookPattern) -> CodebookPattern:
    """The pattern called ``pattern`` (a key of :data:`PATTERNS`), or ``pattern`` itself."""
    if isinstance(pattern, CodebookPattern):
        return pattern
    if pattern not in PATTERNS:
        raise ValueError(f"unknown codebook pattern {pattern!r} (patterns: {sorted(PATTERNS)})")
    return PATTERNS[pattern]()
