"""Classical codec baselines for ``lit-codec evaluate``: Opus (RFC 6716) through its own tools.

:func:`opus_roundtrip` encodes a clip with ``opusenc`` and decodes it with ``opusdec``
(opus-tools, the reference encoder front end), or with ``ffmpeg`` and libopus when
opus-tools is missing. Opus works at 48 kHz internally, so the clip is resampled to 48 kHz
with soxr before encoding and the 48 kHz decoded signal back to the clip's rate; the decoder
drops Opus' pre-skip, and the caller removes whatever constant delay remains
(:func:`~lit_codec.metrics.functional.align`). The bitrate reported is the one actually
spent: the bytes of the audio packets of the Ogg stream (headers and container excluded)
over the clip's duration — Opus' VBR lands near, not on, the target.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf

__all__ = [
    "OPUS_KBPS",
    "BaselineOutput",
    "OpusUnavailableError",
    "ogg_packet_sizes",
    "opus_backend",
    "opus_roundtrip",
]

OPUS_KBPS = (6.0, 8.0, 12.0)
OPUS_RATE = 48000

OpusBackend = Literal["opus-tools", "ffmpeg"]


class OpusUnavailableError(RuntimeError):
    """Neither opus-tools nor an ffmpeg with libopus is installed."""


@dataclass
class BaselineOutput:
    """A clip after a round trip through a classical codec."""

    audio: np.ndarray  # (T,) float32 at the input's rate, trimmed or zero-padded to T
    kbps: float  # bitrate actually spent on audio packets
    target_kbps: float  # the bitrate asked of the encoder


def opus_backend() -> OpusBackend:
    """The tools used for Opus: ``"opus-tools"``, else ``"ffmpeg"`` (with libopus).

    Raises:
        OpusUnavailableError: with installation hints when neither is available.
    """
    if shutil.which("opusenc") and shutil.which("opusdec"):
        return "opus-tools"
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg:
        proc = subprocess.run(
            [ffmpeg, "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
        )
        if "libopus" in proc.stdout:
            return "ffmpeg"
    raise OpusUnavailableError(
        "the Opus baseline needs opusenc and opusdec (opus-tools: `apt install opus-tools`, "
        "`brew install opus-tools`) or ffmpeg built with libopus; neither is installed"
    )


def ogg_packet_sizes(data: bytes) -> list[int]:
    """Sizes in bytes of the packets of an Ogg stream (one logical stream), in order."""
    sizes: list[int] = []
    current = 0
    pos = 0
    while pos + 27 <= len(data):
        if data[pos : pos + 4] != b"OggS":
            raise ValueError(f"not an Ogg page at byte {pos}")
        n_segments = data[pos + 26]
        lacing = data[pos + 27 : pos + 27 + n_segments]
        for value in lacing:
            current += value
            if value < 255:  # a lacing value below 255 ends a packet
                sizes.append(current)
                current = 0
        pos += 27 + n_segments + sum(lacing)
    return sizes


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        message = (proc.stderr or proc.stdout).strip().splitlines()
        raise RuntimeError(
            f"{Path(cmd[0]).name} failed: {message[-1] if message else proc.returncode}"
        )


def opus_roundtrip(
    audio: np.ndarray, sample_rate: int, kbps: float, backend: OpusBackend | None = None
) -> BaselineOutput:
    """Encode and decode a mono clip with Opus at a target bitrate.

    Args:
        audio: mono clip ``(T,)`` in [-1, 1].
        sample_rate: its rate in Hz.
        kbps: target bitrate in kbit/s (Opus accepts 6 and up for mono).
        backend: ``"opus-tools"`` or ``"ffmpeg"``; ``None`` picks with :func:`opus_backend`.

    Returns:
        The decoded clip at ``sample_rate`` with the input's length, and the bitrate spent.
    """
    from lit_codec.data.audio_io import resample

    backend = backend or opus_backend()
    audio = np.asarray(audio, dtype=np.float32)
    seconds = len(audio) / sample_rate
    with tempfile.TemporaryDirectory(prefix="lit-codec-opus-") as tmp:
        src, coded, out = Path(tmp) / "in.wav", Path(tmp) / "coded.opus", Path(tmp) / "out.wav"
        sf.write(
            src,
            np.clip(resample(audio, sample_rate, OPUS_RATE), -1.0, 1.0),
            OPUS_RATE,
            subtype="FLOAT",
        )
        if backend == "opus-tools":
            _run(["opusenc", "--quiet", "--bitrate", f"{kbps:g}", str(src), str(coded)])
            _run(["opusdec", "--quiet", "--float", "--rate", str(OPUS_RATE), str(coded), str(out)])
        else:
            ffmpeg = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y"]
            _run([*ffmpeg, "-i", str(src), "-c:a", "libopus", "-b:a", f"{kbps:g}k", str(coded)])
            _run([*ffmpeg, "-i", str(coded), "-ar", str(OPUS_RATE), "-c:a", "pcm_f32le", str(out)])
        packets = ogg_packet_sizes(coded.read_bytes())
        decoded, rate = sf.read(out, dtype="float32", always_2d=True)
    payload = sum(packets[2:])  # the first two packets are the OpusHead and OpusTags headers
    decoded = resample(decoded.mean(axis=1, dtype=np.float32), rate, sample_rate)
    if len(decoded) >= len(audio):
        decoded = decoded[: len(audio)]
    else:
        decoded = np.pad(decoded, (0, len(audio) - len(decoded)))
    return BaselineOutput(
        decoded.astype(np.float32, copy=False), 8.0 * payload / seconds / 1000.0, float(kbps)
    )
