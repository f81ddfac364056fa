"""``Codec``: a trained codec for inference — encode audio to codes, decode codes to audio.

    from lit_codec import Codec
    codec = Codec.from_checkpoint("runs/debug/checkpoints/last.ckpt")
    codes = codec.encode(wav, kbps=3)          # (B, n_q, frames) int64
    audio = codec.decode(codes)                # (B, 1, frames * hop)
    with codec.streaming() as stream:          # chunks of any size, same codes as offline
        for chunk in chunks:
            codes = stream.encode(chunk)       # (B, n_q, new frames)
            audio = stream.decode(codes)       # (B, 1, new frames * hop)
        codes = stream.flush()                 # the last, zero-padded frame
    codes = codec.encode(noisy, denoise=True)  # a denoising codec (FiLM in the encoder)

A codec trained with a denoising flag (``recipes/codec/denoise_16khz.yaml``) denoises on
request at the side its FiLM layer sits on: ``encode(..., denoise=True)`` when it is on the
encoder output (the codes are those of the clean estimate), ``decode(..., denoise=True)``
when it is on the decoder input; :attr:`Codec.denoises_at` says which.

Checkpoints are read with ``torch.load(weights_only=True)``: only tensors and plain
values are unpickled, and the networks are rebuilt from the configuration the
checkpoint records (classes from ``lit_codec`` only, unless ``trust=True``).
``Codec.export`` writes a ``.safetensors`` file that holds the same.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from lit_codec.nn.configurable import build_module
from lit_codec.nn.conv import fold_weight_norm, streaming
from lit_codec.sniff import KINDS, file_kind

__all__ = ["EXPECTED_CHECKPOINT", "Codec", "CodecStream", "load_audio", "not_a_checkpoint"]

FORMAT = "lit-codec/codec"


class Codec(nn.Module):
    """Generator + quantizer of a trained codec, ready for inference.

    Args:
        generator: the encoder/decoder.
        quantizer: the residual vector quantizer.
        sample_rate: audio rate in Hz.
        config: the configuration the networks were built from (for export and fingerprint).
    """

    def __init__(
        self,
        generator: nn.Module,
        quantizer: nn.Module,
        sample_rate: int,
        config: dict[str, Any] | None = None,
    ):
        super().__init__()
        self.generator = fold_weight_norm(generator)  # inference weights; a no-op if already folded
        self.quantizer = fold_weight_norm(quantizer)  # plain projection weights (factorised codes)
        self.sample_rate = int(sample_rate)
        self.config = config or {}
        self._fingerprint = _fingerprint(self.config, self.state_dict())
        self.eval()

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(
        cls, path: str | os.PathLike, map_location: str | torch.device = "cpu", trust: bool = False
    ) -> Codec:
        """Load a codec from a Lightning checkpoint of :class:`~lit_codec.models.CodecGAN`
        (``.ckpt``), an export (``.safetensors``) or a sharded checkpoint folder, told apart
        by their content; or a shipped codec by name (``"speech16k"``, see :meth:`pretrained`)
        when no file of that name exists.

        Raises:
            FileNotFoundError: nothing exists at ``path``.
            ValueError: ``path`` is not a codec checkpoint (the message says what it looks
                like and what was expected), or holds objects it cannot load safely.
        """
        from lit_codec.pretrained import is_pretrained_name, pretrained_path

        if is_pretrained_name(path):
            path = pretrained_path(str(path))
        path = Path(path)
        kind = file_kind(path)
        if kind == "missing":
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        if kind == "folder":  # a sharded (FSDP) checkpoint: consolidate it in memory
            config, state = _load_sharded(path)
        elif kind == "safetensors":
            config, state = _load_export(path, map_location)
        elif kind in ("torch", "pickle"):
            config, state = _load_lightning(path, map_location, kind)
        else:
            raise ValueError(not_a_checkpoint(path, f"looks like {KINDS[kind]}"))
        generator = build_module(config["generator"], trust=trust)
        quantizer = build_module(config["quantizer"], trust=trust)
        if kind == "safetensors":  # exports hold inference weights (weight norm folded)
            fold_weight_norm(generator)
            fold_weight_norm(quantizer)
        holder = nn.ModuleDict({"generator": generator, "quantizer": quantizer})
        missing, unexpected = holder.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path}: checkpoint does not match its configuration (missing {missing[:5]}, unexpected {unexpected[:5]})"
            )
        return cls(
            generator.to(map_location), quantizer.to(map_location), config["sample_rate"], config
        )

    @classmethod
    def pretrained(
        cls, name: str = "speech16k", map_location: str | torch.device = "cpu"
    ) -> Codec:
        """A codec that ships with the package (:mod:`lit_codec.pretrained`), e.g.
        ``Codec.pretrained("speech16k")``: 16 kHz speech at 1.5 / 3 / 6 kbps."""
        from lit_codec.pretrained import pretrained_path

        return cls.from_checkpoint(pretrained_path(name), map_location=map_location)

    def export(self, path: str | os.PathLike, weights: str = "float32") -> Path:
        """Write the codec as ``.safetensors`` (weights + configuration), loadable by
        :meth:`from_checkpoint`. The file replaces ``path`` atomically and gets the mode of
        any new file (``0o666`` less the umask).

        Args:
            path: the file to write.
            weights: ``"float32"`` (exact), or ``"int8"`` / ``"int4"`` for a compact file
                (:mod:`lit_codec.compact`: 4x / about 6x smaller; the loaded codec computes
                with the rounded weights, so its fingerprint and its codes differ from this
                codec's).
        """
        from safetensors.torch import save

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        fingerprint = self.fingerprint
        extra: dict[str, str] = {}
        if weights != "float32":
            from lit_codec.compact import pack, unpack

            state, extra = pack(state, weights)  # type: ignore[arg-type]
            # the fingerprint of what a load gives: the rounded weights
            fingerprint = _fingerprint(self.config, unpack(state, extra))
        meta = {
            "format": FORMAT,
            "config": json.dumps(self.config),
            "fingerprint": fingerprint,
            **extra,
        }
        # safetensors' save_file writes through a private (0600) temporary file: serialise
        # here and write with open(), which creates files as every other output is created
        data = save(state, metadata=meta)
        from lit_codec.checkpoint_io import atomic_write  # here: Codec alone needs no Lightning

        return atomic_write(path, lambda f: f.write(data))

    # ------------------------------------------------------------------ properties
    @property
    def fingerprint(self) -> str:
        """Identifies the codec (configuration and weights): codes are only decodable by the same."""
        return self._fingerprint

    @property
    def hop_length(self) -> int:
        return self.generator.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def n_q(self) -> int:
        return self.quantizer.n_q

    @property
    def codebook_size(self) -> int:
        return self.quantizer.codebook_size

    @property
    def denoises_at(self) -> str | None:
        """``"encode"`` or ``"decode"``: where this codec takes ``denoise=True`` (its FiLM
        layer), or None for a codec trained without a denoising flag."""
        if getattr(self.generator, "film", None) is None:
            return None
        return "encode" if self.generator.film_position == "encoder" else "decode"

    def require_denoising(self, side: str | None = None) -> None:
        """Raise a ``ValueError`` that says what to do unless this codec takes ``denoise=True``
        (at ``side``, ``"encode"`` or ``"decode"``, when given)."""
        at = self.denoises_at
        if at is None:
            raise ValueError(
                "this codec was not trained to denoise (no FiLM denoising flag); train one with "
                "recipes/codec/denoise_16khz.yaml"
            )
        if side is not None and at != side:
            raise ValueError(
                f"this codec denoises when it {at}s (its FiLM layer is on the "
                f"{'encoder output' if at == 'encode' else 'decoder input'}): pass denoise to {at} "
                f"(`lit-codec {at} --denoise`)"
            )

    def _condition(self, denoise: bool, side: str, batch: int, device) -> torch.Tensor | None:
        """The (B,) denoising flags for ``side`` (``"encode"``/``"decode"``), None for none."""
        if not denoise:
            return None
        self.require_denoising(side)
        return torch.ones(batch, dtype=torch.long, device=device)

    def bitrates(self) -> list[float]:
        """kbps of every usable number of codebooks."""
        return [self.quantizer.kbps(n) for n in range(1, self.n_q + 1)]

    def resolve_n_q(self, n_q: int | None = None, kbps: float | None = None) -> int:
        """Codebooks for a request: ``n_q``, else the largest count within ``kbps``, else all."""
        if n_q is not None and kbps is not None:
            raise ValueError("give n_q or kbps, not both")
        if kbps is not None:
            n_q = self.quantizer.n_q_for_kbps(kbps)
            if n_q < 1:
                raise ValueError(
                    f"{kbps} kbps is below this codec's lowest bitrate {self.bitrates()[0]:g} kbps"
                )
        n_q = self.n_q if n_q is None else int(n_q)
        if not 1 <= n_q <= self.n_q:
            raise ValueError(f"n_q must be in 1..{self.n_q}, not {n_q}")
        return n_q

    # ------------------------------------------------------------------ offline
    @staticmethod
    def _as_batch(wav: torch.Tensor | np.ndarray) -> torch.Tensor:
        wav = torch.as_tensor(wav, dtype=torch.float32)
        if wav.dim() == 1:
            wav = wav[None, None]  # (1, 1, T)
        elif wav.dim() == 2:
            wav = wav[:, None]  # (B, 1, T)
        if wav.dim() != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected audio (T,), (B, T) or (B, 1, T), got {tuple(wav.shape)}")
        return wav

    @torch.inference_mode()
    def encode(
        self,
        wav: torch.Tensor | np.ndarray,
        n_q: int | None = None,
        kbps: float | None = None,
        denoise: bool = False,
    ) -> torch.Tensor:
        """Codes ``(B, n_q, ceil(T / hop))`` of audio ``(T,)``, ``(B, T)`` or ``(B, 1, T)`` at
        ``sample_rate``; ``denoise`` codes the clean estimate (see :attr:`denoises_at`)."""
        wav = self._as_batch(wav).to(self._device())
        condition = self._condition(denoise, "encode", wav.shape[0], wav.device)
        latent = self.generator.encode(wav, condition)  # (B, D, F)
        return self.quantizer.encode(latent, n_q=self.resolve_n_q(n_q, kbps))  # (B, n_q, F)

    @torch.inference_mode()
    def decode(self, codes: torch.Tensor | np.ndarray, denoise: bool = False) -> torch.Tensor:
        """Audio ``(B, 1, frames * hop)`` from codes ``(B, n_q, frames)`` or ``(n_q, frames)``;
        ``denoise`` for a codec that denoises when decoding (see :attr:`denoises_at`)."""
        codes = torch.as_tensor(codes).long()
        if codes.dim() == 2:
            codes = codes[None]  # (1, n_q, F)
        out_of_range = codes.numel() > 0 and (
            int(codes.min()) < 0 or int(codes.max()) >= self.codebook_size
        )
        if codes.dim() != 3 or codes.shape[1] > self.n_q or out_of_range:
            raise ValueError(
                f"codes do not fit this codec ({self.n_q} codebooks of {self.codebook_size})"
            )
        condition = self._condition(denoise, "decode", codes.shape[0], self._device())
        latent = self.quantizer.decode(codes.to(self._device()))  # (B, D, F)
        return self.generator.decode(latent, condition)  # (B, 1, F * hop)

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    # ------------------------------------------------------------------ streaming
    @contextmanager
    def streaming(
        self,
        batch_size: int = 1,
        n_q: int | None = None,
        kbps: float | None = None,
        denoise: bool = False,
    ) -> Iterator[CodecStream]:
        """A :class:`CodecStream` for chunk-by-chunk encoding and decoding (latency: one frame);
        ``denoise`` turns on the denoising flag wherever this codec reads it."""
        if denoise:
            self.require_denoising()
        n_q = self.resolve_n_q(n_q, kbps)
        with torch.inference_mode(), streaming(self.generator, batch_size):
            yield CodecStream(self, n_q, batch_size, denoise)


class CodecStream:
    """Stateful encoder and decoder of one :meth:`Codec.streaming` block."""

    def __init__(self, codec: Codec, n_q: int, batch_size: int = 1, denoise: bool = False):
        self.codec = codec
        self.n_q = n_q
        self.batch_size = batch_size
        self.samples_in = 0
        self.device = codec._device()
        at = codec.denoises_at if denoise else None
        flags = torch.ones(batch_size, dtype=torch.long, device=self.device)
        self._encode_condition = flags if at == "encode" else None  # (B,) or None
        self._decode_condition = flags if at == "decode" else None

    def encode(self, chunk: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Codes ``(B, n_q, m)`` of the frames this chunk completes (m may be 0)."""
        chunk = Codec._as_batch(chunk).to(self.device)
        self.samples_in += chunk.shape[-1]
        latent = self.codec.generator.encode(chunk, self._encode_condition)  # (B, D, m)
        if latent.shape[-1] == 0:
            return torch.zeros(chunk.shape[0], self.n_q, 0, dtype=torch.long, device=chunk.device)
        return self.codec.quantizer.encode(latent, n_q=self.n_q)

    def flush(self) -> torch.Tensor:
        """Complete the last partial frame with zeros (as offline encoding pads) and encode it."""
        pad = -self.samples_in % self.codec.hop_length
        if pad == 0:
            return torch.zeros(self.batch_size, self.n_q, 0, dtype=torch.long)
        return self.encode(torch.zeros(self.batch_size, 1, pad))

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Audio ``(B, 1, m * hop)`` of the next ``m`` frames of codes ``(B, n_q, m)``."""
        if codes.shape[-1] == 0:
            return torch.zeros(codes.shape[0], 1, 0)
        latent = self.codec.quantizer.decode(codes.long().to(self.device))  # (B, D, m)
        return self.codec.generator.decode(latent, self._decode_condition)


EXPECTED_CHECKPOINT = (
    "a Lightning .ckpt of CodecGAN (runs/<recipe>/checkpoints/last.ckpt), a .safetensors "
    "written by `lit-codec export`, or a sharded checkpoint folder"
)


def not_a_checkpoint(path: str | os.PathLike, what: str) -> str:
    """``"<path> <what>, not a codec checkpoint: expected ..."``, for every refusal alike."""
    return f"{path} {what}, not a codec checkpoint: expected {EXPECTED_CHECKPOINT}"


def _load_export(
    path: Path, map_location: str | torch.device
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and (folded) state of a ``.safetensors`` written by :meth:`Codec.export`."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:  # a damaged header
        raise ValueError(
            not_a_checkpoint(path, f"is a safetensors file that cannot be read ({e})")
        ) from None
    if meta.get("format") != FORMAT or "config" not in meta:
        raise ValueError(
            not_a_checkpoint(path, "is a safetensors file without lit-codec's metadata")
        )
    from lit_codec.compact import unpack

    state = unpack(load_file(str(path), device="cpu"), meta)
    return json.loads(meta["config"]), {k: v.to(map_location) for k, v in state.items()}


def _load_lightning(
    path: Path, map_location: str | torch.device, kind: str
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and generator/quantizer state of a Lightning checkpoint, unpickling only
    tensors and plain values (``weights_only=True``)."""
    import warnings

    try:
        with warnings.catch_warnings():  # its protocol warning precedes the error below
            warnings.filterwarnings("ignore", message=r".*Detected pickle protocol")
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch.load's errors on foreign pickles have many types
        if kind == "pickle":  # a pickle, but not one torch.save wrote
            raise ValueError(
                not_a_checkpoint(path, f"looks like {KINDS[kind]} that cannot be loaded safely")
            ) from None
        unsupported = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if unsupported or "Weights only load failed" in str(e):
            what = f"objects of type {unsupported.group(1)}" if unsupported else "Python objects"
            what = f"is a PyTorch checkpoint holding {what}, which lit-codec never unpickles"
        else:  # a damaged file (a truncated zip, ...)
            what = f"is a PyTorch checkpoint that cannot be read ({str(e).splitlines()[0]})"
        raise ValueError(not_a_checkpoint(path, what)) from None
    if not isinstance(ckpt, dict) or "codec" not in ckpt.get("lit_codec", {}):
        raise ValueError(
            not_a_checkpoint(path, "is a PyTorch checkpoint without a codec configuration")
        )
    state = {
        k: v for k, v in ckpt["state_dict"].items() if k.startswith(("generator.", "quantizer."))
    }
    return ckpt["lit_codec"]["codec"], state


def _load_sharded(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Config and full generator/quantizer state of a sharded Lightning checkpoint folder.

    The shard index (``.metadata``) is read by torch.distributed.checkpoint, which uses
    pickle: consolidate only checkpoints you made (``lit-codec export`` then writes a safe
    ``.safetensors`` file to share).
    """
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from lit_codec.strategies import recover_checkpoint

    recover_checkpoint(path)
    meta_file = path / "meta.pt"
    if not meta_file.is_file():
        raise ValueError(not_a_checkpoint(path, "is a folder without meta.pt"))
    meta = torch.load(meta_file, map_location="cpu", weights_only=True)
    if not isinstance(meta, dict) or "codec" not in meta.get("lit_codec", {}):
        raise ValueError(
            not_a_checkpoint(path, "is a checkpoint folder without a codec configuration")
        )
    with tempfile.TemporaryDirectory() as tmp:
        dcp_to_torch_save(str(path), f"{tmp}/full.pt")
        full = torch.load(f"{tmp}/full.pt", map_location="cpu", weights_only=True)
    state = {
        k: v for k, v in full["state_dict"].items() if k.startswith(("generator.", "quantizer."))
    }
    return meta["lit_codec"]["codec"], state


def _fingerprint(config: dict[str, Any], state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for key in sorted(state):
        tensor = state[key]
        if not torch.is_tensor(tensor) or key.endswith("_stream"):
            continue
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()[:16]


def load_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """Read any audio file as mono float32 ``(T,)`` at ``sample_rate`` (soxr), or raise a clear error."""
    from lit_codec.data.audio_io import AudioError, read_audio, resample, to_mono

    try:
        decoded = read_audio(path)
    except AudioError as e:
        raise ValueError(
            f"cannot read {path}: {e.reason}" + (f" ({e.detail})" if e.detail else "")
        ) from None
    audio = resample(to_mono(decoded.samples), decoded.sample_rate, sample_rate)
    if not np.isfinite(audio).all():
        raise ValueError(f"{path} holds NaN or infinite samples")
    return torch.from_numpy(np.ascontiguousarray(audio))
