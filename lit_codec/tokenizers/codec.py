"""Codec tokenizer: audio clips -> codec codes ``(frames, n_q)`` int16, batched.

The target (and every audio condition) of a codec-LM task is the codes of a trained
:class:`~lit_codec.codec.Codec`; this wraps one for data preparation::

    tok = CodecTokenizer("speech16k")                 # or a .ckpt / .safetensors / a Codec
    codes = tok.encode_batch(clips, sample_rate=16000)  # [(ceil(len / hop), n_q) int16, ...]
    tok.info                                           # CodecInfo for the vocabulary

Clips are sorted by length, cut into batches of at most ``max_batch_seconds`` of padded
audio, zero-padded on the right to the longest clip of their batch, encoded in one call, and
each result is trimmed to the ``ceil(len / hop)`` frames of its own clip. For a causal codec
(no look-ahead) that is exactly what encoding each clip alone gives. A non-causal codec sees
the zeros after a shorter clip where, alone, it would see its own padding: the last frames
of such a clip (its receptive field's look-ahead, a few frames) may take other codes. The
batches depend only on the clips given, so the same call gives the same codes. Nothing is
resampled: audio at another rate is refused, the caller resamples (``soxr``).

Any quantizer a :class:`Codec` supports works (RVQ, factorised codebooks, FSQ): the codes
are whatever ``Codec.encode`` returns, which must fit int16 (codebooks of at most 32768).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from lit_codec.codec import Codec
from lit_codec.lm.vocab import CodecInfo

__all__ = ["CodecTokenizer", "default_max_batch_seconds"]

INT16_CODES = 1 << 15  # int16 holds codes 0 .. 32767


class CodecTokenizer:
    """Audio at the codec's rate -> ``(frames, n_q)`` int16 codes.

    Args:
        codec: a :class:`~lit_codec.codec.Codec`, a checkpoint or export path, or the name
            of a shipped codec (``"speech16k"``). A given Codec is moved to ``device``.
        device: where the codec runs (``"cpu"``, ``"cuda"``, ``"cuda:1"``).
        max_batch_seconds: most padded audio encoded in one call (batch size x longest
            clip); a longer clip goes alone. Default: 8 s on a CPU, where a few seconds
            already keep the matrix products busy (larger batches measured no faster), 64 s
            on a GPU, where larger batches amortise the per-call overhead.
        n_q: codebooks to keep (the first ``n_q``); default: all of the codec's.

    Raises:
        ValueError: a codebook larger than int16 holds, or ``n_q`` out of range.
    """

    def __init__(
        self,
        codec: str | os.PathLike | Codec = "speech16k",
        device: str | torch.device = "cpu",
        max_batch_seconds: float | None = None,
        n_q: int | None = None,
    ):
        self.device = torch.device(device)
        if max_batch_seconds is None:
            max_batch_seconds = default_max_batch_seconds(self.device)
        if not max_batch_seconds > 0:
            raise ValueError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
        if isinstance(codec, Codec):
            self.codec = codec.to(self.device).eval()
        else:
            self.codec = Codec.from_checkpoint(codec, map_location=self.device)
        self.n_q = self.codec.resolve_n_q(n_q)
        if self.codec.codebook_size > INT16_CODES:
            raise ValueError(
                f"codebooks of {self.codec.codebook_size} codes do not fit int16 "
                f"(at most {INT16_CODES})"
            )
        self.max_batch_seconds = float(max_batch_seconds)

    # ------------------------------------------------------------------ description
    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def hop_length(self) -> int:
        return self.codec.hop_length

    @property
    def frame_rate(self) -> float:
        return self.codec.frame_rate

    @property
    def codebook_size(self) -> int:
        return self.codec.codebook_size

    @property
    def info(self) -> CodecInfo:
        """What the vocabulary records of the codec (with the ``n_q`` kept)."""
        c = self.codec
        return CodecInfo(c.fingerprint, c.sample_rate, c.frame_rate, self.n_q, c.codebook_size)

    def metadata(self) -> dict[str, Any]:
        return {"kind": "codec", **self.info.to_dict(), "hop_length": self.hop_length}

    def frames(self, num_samples: int) -> int:
        """Code frames of a clip of ``num_samples`` samples: ``ceil(num_samples / hop)``."""
        return -(-int(num_samples) // self.hop_length)

    # ------------------------------------------------------------------ encoding
    def encode(self, audio: np.ndarray, sample_rate: int) -> np.ndarray:
        """Codes of one clip: ``(T,)`` float audio -> ``(ceil(T / hop), n_q)`` int16."""
        return self.encode_batch([audio], sample_rate)[0]

    __call__ = encode

    def encode_batch(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """Codes of several clips, in their order.

        Args:
            audios: ``(T_i,)`` mono float clips (numpy or torch) at ``sample_rate``.
            sample_rate: their rate; must be the codec's.

        Returns:
            ``(ceil(T_i / hop), n_q)`` int16 codes per clip (``(0, n_q)`` for an empty clip).

        Raises:
            ValueError: audio at another rate than the codec's (names both), or a clip that
                is not 1-D.
        """
        if int(sample_rate) != self.sample_rate:
            raise ValueError(
                f"audio at {sample_rate} Hz, but the codec {self.codec.fingerprint} codes "
                f"{self.sample_rate} Hz audio: resample it first (soxr)"
            )
        clips = [_as_1d(a, i) for i, a in enumerate(audios)]
        out: list[np.ndarray | None] = [None] * len(clips)
        for batch in self._batches([len(c) for c in clips]):
            for i, codes in zip(batch, self._encode_padded([clips[i] for i in batch])):
                out[i] = codes
        return out  # type: ignore[return-value]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Clip indices grouped longest first; padded samples per batch within the budget."""
        budget = self.max_batch_seconds * self.sample_rate
        order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
        batches: list[list[int]] = []
        for i in order:
            longest = lengths[batches[-1][0]] if batches else 0
            if batches and (len(batches[-1]) + 1) * max(longest, 1) <= budget:
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def _encode_padded(self, clips: list[torch.Tensor]) -> list[np.ndarray]:
        """Encode clips of one batch (longest first) as one zero-padded ``(B, 1, T)`` call."""
        hop, n_q = self.hop_length, self.n_q
        frames = [self.frames(len(c)) for c in clips]
        if frames[0] == 0:  # only empty clips
            return [np.zeros((0, n_q), dtype=np.int16) for _ in clips]
        wav = torch.zeros(len(clips), 1, frames[0] * hop)  # (B, 1, T)
        for row, clip in zip(wav, clips):
            row[0, : len(clip)] = clip
        with torch.inference_mode():
            codes = self.codec.encode(wav.to(self.device), n_q=n_q)  # (B, n_q, F)
            codes = codes[..., : frames[0]].transpose(1, 2).to(torch.int16).cpu()  # (B, F, n_q)
        array = codes.numpy()
        return [np.ascontiguousarray(array[b, :f]) for b, f in enumerate(frames)]  # (F_b, n_q)


def default_max_batch_seconds(device: str | torch.device) -> float:
    """8 s of padded audio per call on a CPU, 64 s on an accelerator."""
    return 8.0 if torch.device(device).type == "cpu" else 64.0


def _as_1d(audio: Any, index: int) -> torch.Tensor:
    if isinstance(audio, torch.Tensor):
        audio = audio.detach().cpu().numpy()
    clip = torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32))
    if clip.dim() != 1:
        raise ValueError(f"clip {index}: expected mono audio (T,), got shape {tuple(clip.shape)}")
    return clip
