"""``CodebookStatistics``: how a residual VQ uses its codebooks, and the bitrate it needs.

Counts every code of every layer (summed across DDP ranks) and derives, per layer, the
fraction of the codebook in use, the empirical entropy ``H`` (bits per code) and the
perplexity ``2 ** H`` — the figures SoundStream, EnCodec and descript-audio-codec report to
show codebook collapse or healthy use. From them: the bitrate the codes take as sent
(``log2(codebook_size)`` bits per code) and the bitrate they would need if each layer were
entropy coded with its own empirical distribution (EnCodec's entropy-coding argument; a
static per-layer model, so a lower bound for a real coder that ignores context).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["CodebookStatistics", "CodebookStats"]


@dataclass
class CodebookStats:
    """What :meth:`CodebookStatistics.compute` returns.

    Per-layer figures are lists (torchmetrics would squeeze a one-layer tensor to a
    scalar). Layers never seen (codes with fewer codebooks than ``n_q``) have usage, entropy
    and perplexity 0.
    """

    usage: list[float]  # (n_q,) fraction of each codebook's entries used at least once
    entropy: list[float]  # (n_q,) empirical entropy in bits per code
    perplexity: list[float]  # (n_q,) 2 ** entropy: the number of equally likely codes it equals
    counts: Tensor  # (n_q, codebook_size) how often each code occurred
    kbps: float  # bitrate of the codes as sent (log2(codebook_size) bits per code)
    entropy_kbps: float  # bitrate with each layer entropy coded by its empirical distribution
    frames: int  # frames counted (of the first layer)


class CodebookStatistics(Metric):
    """Per-layer code histograms of a residual VQ and the statistics derived from them.

    Args:
        n_q: number of codebooks (layers) of the quantizer.
        codebook_size: entries per codebook.
        frame_rate: frames per second of the codes, to turn bits per frame into kbps.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    counts: Tensor
    layer_frames: Tensor

    def __init__(self, n_q: int, codebook_size: int, frame_rate: float, **kwargs) -> None:
        super().__init__(**kwargs)
        if n_q < 1 or codebook_size < 2 or frame_rate <= 0:
            raise ValueError("need n_q >= 1, codebook_size >= 2 and frame_rate > 0")
        self.n_q = int(n_q)
        self.codebook_size = int(codebook_size)
        self.frame_rate = float(frame_rate)
        self.add_state(
            "counts", torch.zeros(n_q, codebook_size, dtype=torch.long), dist_reduce_fx="sum"
        )
        self.add_state("layer_frames", torch.zeros(n_q, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, codes: Tensor, lengths: Tensor | None = None) -> None:
        """Count a batch of codes.

        Args:
            codes: integer codes ``(B, n, F)`` with ``n <= n_q`` codebooks (a lower bitrate
                uses the first ``n``).
            lengths: valid frames of each item ``(B,)``; ``None`` counts all ``F``.
        """
        if codes.dim() != 3 or codes.shape[1] > self.n_q:
            raise ValueError(f"expected codes (B, n <= {self.n_q}, F), got {tuple(codes.shape)}")
        codes = codes.detach().long().to(self.counts.device)
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size):
            raise ValueError(f"codes must lie in [0, {self.codebook_size})")
        batch, n, frames = codes.shape
        valid = torch.ones(batch, frames, dtype=torch.bool, device=codes.device)  # (B, F)
        if lengths is not None:
            valid = (
                torch.arange(frames, device=codes.device)[None] < lengths.to(codes.device)[:, None]
            )  # (B, F)
        layer = torch.arange(n, device=codes.device)[None, :, None]  # (1, n, 1)
        flat = (codes + layer * self.codebook_size).transpose(1, 2)[valid]  # (valid frames, n)
        hist = torch.bincount(flat.reshape(-1), minlength=n * self.codebook_size)  # (n * K,)
        self.counts[:n] += hist.view(n, self.codebook_size)  # (n, K)
        self.layer_frames[:n] += int(valid.sum())

    def compute(self) -> CodebookStats:
        """Usage, entropy and perplexity per layer, and the bitrates (all 0 before any codes)."""
        counts = self.counts.double()  # (n_q, K)
        layer_frames = self.layer_frames.double()  # (n_q,)
        p = counts / layer_frames.clamp_min(1)[:, None]  # (n_q, K)
        entropy = -(p * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(dim=1)  # (n_q,)
        seen = layer_frames > 0  # (n_q,)
        usage = (self.counts > 0).double().mean(dim=1)  # (n_q,)
        perplexity = torch.where(seen, entropy.exp2(), torch.zeros_like(entropy))  # (n_q,)
        frames = float(self.layer_frames[0])
        share = layer_frames / frames if frames > 0 else torch.zeros_like(layer_frames)  # (n_q,)
        kbps = float(share.sum()) * math.log2(self.codebook_size) * self.frame_rate / 1000
        entropy_kbps = float((share * entropy).sum()) * self.frame_rate / 1000
        return CodebookStats(
            usage=usage.tolist(),
            entropy=entropy.tolist(),
            perplexity=perplexity.tolist(),
            counts=self.counts.clone(),
            kbps=kbps,
            entropy_kbps=entropy_kbps,
            frames=int(frames),
        )
