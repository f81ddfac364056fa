"""Reading, checking and converting audio files (soundfile + soxr, no torchaudio).

:func:`read_audio` decodes any file libsndfile reads (WAV/RF64/W64, FLAC, Ogg
Vorbis/Opus, MP3, AIFF, AU, CAF, ...; any bit depth, rate and channel count)
and, when ``ffmpeg`` is installed, whatever ffmpeg decodes (m4a/AAC, WMA, ...).
Every failure raises :class:`AudioError` whose ``reason`` is a short,
stable cause (``"empty file"``, ``"truncated"``, ``"not audio"``, ...) so that
callers can report it per file without stopping.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

__all__ = [
    "AUDIO_EXTENSIONS",
    "AudioError",
    "DecodedAudio",
    "encode_flac",
    "read_audio",
    "resample",
    "to_mono",
]

# Extensions searched for in folders (lower case). libsndfile reads the first
# group; the second needs ffmpeg and is reported as undecodable without it.
SOUNDFILE_EXTENSIONS = (
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".w64", ".rf64", ".nist", ".sph", ".voc", ".htk", ".svx",
    ".paf", ".sd2", ".wv", ".mat",
)  # fmt: skip
FFMPEG_EXTENSIONS = (".m4a", ".aac", ".wma", ".webm", ".mka", ".mp2", ".ac3", ".amr", ".ape")
AUDIO_EXTENSIONS = SOUNDFILE_EXTENSIONS + FFMPEG_EXTENSIONS


class AudioError(Exception):
    """A file that cannot be used as audio; ``reason`` is a short cause for reports."""

    def __init__(self, path: str | os.PathLike, reason: str, detail: str = ""):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}" + (f" ({detail})" if detail else ""))


@dataclass
class DecodedAudio:
    """Audio as read from a file, before any conversion."""

    samples: np.ndarray  # (channels, T) float32
    sample_rate: int
    channels: int
    format: str  # e.g. "WAV/PCM_24", "FLAC/PCM_16", "ffmpeg"

    @property
    def seconds(self) -> float:
        return self.samples.shape[1] / self.sample_rate


def read_audio(path: str | os.PathLike, use_ffmpeg: bool = True) -> DecodedAudio:
    """Decode a file to float32 ``(channels, T)`` or raise :class:`AudioError`."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        raise AudioError(path, "unreadable path", "broken symbolic link")
    if path.is_dir():
        raise AudioError(path, "not a file", "a directory named like an audio file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise AudioError(path, "unreadable path", e.strerror or str(e)) from None
    if not os.access(path, os.R_OK):
        raise AudioError(path, "unreadable path", "permission denied")
    if size == 0:
        raise AudioError(path, "empty file")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise AudioError(path, "unreadable path", e.strerror or str(e)) from None
    try:
        info = sf.info(str(path))
        data, rate = sf.read(str(path), dtype="float32", always_2d=True)
    except Exception as e:  # libsndfile raises LibsndfileError/RuntimeError/SoundFileError
        message = str(e)
        # ffmpeg only for formats libsndfile does not know: a file it knows but
        # cannot decode is damaged, and ffmpeg would quietly return a part of it
        unknown = "not recognised" in message.lower() or "unknown format" in message.lower()
        if use_ffmpeg and unknown and shutil.which("ffmpeg") and not _looks_like_text(head):
            return _read_with_ffmpeg(path, message)
        raise _classify(path, head, message) from None
    if data.shape[0] == 0:
        raise AudioError(path, "empty audio", "the file holds no samples")
    _check_complete(path, info, data.shape[0], head, size)
    return DecodedAudio(
        samples=np.ascontiguousarray(data.T),  # (C, T)
        sample_rate=int(rate),
        channels=data.shape[1],
        format=f"{info.format}/{info.subtype}",
    )


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return False
    printable = sum(32 <= b < 127 or b in (9, 10, 13) for b in head)
    return printable / len(head) > 0.95


def _classify(path: Path, head: bytes, message: str) -> AudioError:
    lowered = message.lower()
    if _looks_like_text(head):
        return AudioError(path, "not audio", "a text file")
    if "not recognised" in lowered or "unknown format" in lowered:
        suffix = path.suffix.lower()
        if suffix in FFMPEG_EXTENSIONS:
            return AudioError(
                path, "unsupported format", f"{suffix} needs ffmpeg, which is not installed"
            )
        return AudioError(path, "not audio", "format not recognised")
    if "lost sync" in lowered or "malformed" in lowered or "fseek" in lowered:
        return AudioError(path, "truncated or corrupt", message.strip())
    return AudioError(path, "undecodable", message.strip())


def _read_with_ffmpeg(path: Path, soundfile_error: str) -> DecodedAudio:
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(path),
           "-vn", "-f", "wav", "-acodec", "pcm_f32le", "-"]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=600, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise AudioError(path, "undecodable", f"ffmpeg failed: {e}") from None
    if proc.returncode != 0 or len(proc.stdout) < 64:
        detail = proc.stderr.decode(errors="replace").strip().splitlines()
        reason = "truncated or corrupt" if detail else "not audio"
        raise AudioError(path, reason, (detail[-1] if detail else soundfile_error)[:200])
    data, rate = sf.read(io.BytesIO(proc.stdout), dtype="float32", always_2d=True)
    if data.shape[0] == 0:
        raise AudioError(path, "empty audio", "the file holds no samples")
    return DecodedAudio(np.ascontiguousarray(data.T), int(rate), data.shape[1], "ffmpeg")


def _check_complete(path: Path, info, frames_read: int, head: bytes, size: int) -> None:
    """Raise if the file is shorter than its own header says."""
    declared = _declared_data_bytes(path, head, size)
    if declared is not None:
        data_offset, data_bytes = declared
        if data_offset + data_bytes > size + 1:
            missing = data_offset + data_bytes - size
            raise AudioError(
                path, "truncated", f"header declares {missing} more bytes than the file holds"
            )
    elif info.format == "FLAC" and 0 < frames_read < info.frames:  # STREAMINFO is exact
        raise AudioError(path, "truncated", f"decoded {frames_read} of {info.frames} frames")
    elif info.frames > 0 and frames_read < info.frames * 0.98 - 4096:  # MP3/Ogg: estimates
        raise AudioError(path, "truncated", f"decoded {frames_read} of {info.frames} frames")


def _declared_data_bytes(path: Path, head: bytes, size: int) -> tuple[int, int] | None:
    """(offset, size) of the sample data declared by a RIFF/WAVE or AIFF header."""
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        endian, form_len, id_data = "<", 12, b"data"
    elif head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        endian, form_len, id_data = ">", 12, b"SSND"
    else:
        return None
    with open(path, "rb") as f:
        f.seek(form_len)
        while True:
            header = f.read(8)
            if len(header) < 8:
                return None
            chunk_id, chunk_len = header[:4], struct.unpack(endian + "I", header[4:])[0]
            if chunk_id == id_data:
                if chunk_len in (0, 0xFFFFFFFF):  # streaming writers leave it unset
                    return None
                return f.tell(), chunk_len
            f.seek(chunk_len + (chunk_len & 1), os.SEEK_CUR)
            if f.tell() > size:
                return None


def to_mono(samples: np.ndarray) -> np.ndarray:
    """Mix ``(channels, T)`` down to ``(T,)`` by averaging the channels."""
    return samples.mean(axis=0, dtype=np.float32) if samples.shape[0] > 1 else samples[0]


def resample(audio: np.ndarray, orig_rate: int, new_rate: int, quality: str = "HQ") -> np.ndarray:
    """Resample a mono ``(T,)`` float32 signal with soxr."""
    if orig_rate == new_rate:
        return audio
    import soxr

    return soxr.resample(audio, orig_rate, new_rate, quality=quality).astype(np.float32, copy=False)


def encode_flac(audio: np.ndarray, sample_rate: int, bit_depth: int = 16) -> bytes:
    """Encode a mono ``(T,)`` signal in [-1, 1] as FLAC bytes (16 or 24 bit)."""
    subtype = {16: "PCM_16", 24: "PCM_24"}[bit_depth]
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(audio, -1.0, 1.0), sample_rate, format="FLAC", subtype=subtype)
    return buffer.getvalue()
