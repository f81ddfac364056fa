"""Builders of small corpora, good and bad, for the data tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import soundfile as sf


def tone(
    seconds: float, rate: int, channels: int = 1, seed: int = 0, level: float = 0.3
) -> np.ndarray:
    """Speech-like test signal: harmonic bursts with pauses, (T, C) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    f0 = 110 + 40 * rng.random()
    x = sum(np.sin(2 * np.pi * f0 * k * t + rng.random()) / k for k in range(1, 6))
    envelope = (np.sin(2 * np.pi * 1.5 * t) > -0.3).astype(np.float64)
    x = level * x / np.max(np.abs(x)) * envelope + 0.003 * rng.standard_normal(len(t))
    return np.stack([x * (0.8 + 0.2 * c) for c in range(channels)], axis=1).astype(np.float32)


# (relative path, seconds, rate, channels, format, subtype)
GOOD_FILES = [
    ("a/pcm16_16k_mono.wav", 2.0, 16000, 1, "WAV", "PCM_16"),
    ("a/PCM24_44k_STEREO.WAV", 1.5, 44100, 2, "WAV", "PCM_24"),
    ("a/float32_48k.wav", 1.2, 48000, 1, "WAV", "FLOAT"),
    ("a/u8_8k.wav", 1.0, 8000, 1, "WAV", "PCM_U8"),
    ("b/int32_22k_6ch.wav", 1.0, 22050, 6, "WAV", "PCM_32"),
    ("b/flac24_96k.flac", 1.0, 96000, 2, "FLAC", "PCM_24"),
    ("b/vorbis_32k.ogg", 1.5, 32000, 1, "OGG", "VORBIS"),
    ("b/deep/er/mp3_44k.mp3", 1.5, 44100, 2, "MP3", "MPEG_LAYER_III"),
    ("c/aiff_48k.aiff", 1.0, 48000, 1, "AIFF", "PCM_16"),
    ("c/au_16k.au", 1.0, 16000, 1, "AU", "PCM_16"),
    ("c/long_25s.flac", 25.0, 16000, 1, "FLAC", "PCM_16"),
]


def write_good(root: Path) -> dict[str, float]:
    """Write GOOD_FILES below root; return {path: seconds}."""
    out = {}
    for i, (rel, seconds, rate, channels, fmt, subtype) in enumerate(GOOD_FILES):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, tone(seconds, rate, channels, seed=i), rate, format=fmt, subtype=subtype)
        out[str(path)] = seconds
    return out


def write_bad(root: Path) -> dict[str, str]:
    """Write one file of each kind of bad input below root; return {path: expected reason word}."""
    root.mkdir(parents=True, exist_ok=True)
    bad = {}
    (root / "empty.wav").write_bytes(b"")
    bad[str(root / "empty.wav")] = "empty"
    full = root / "_full.wav"
    sf.write(full, tone(2.0, 16000), 16000, subtype="PCM_16")
    data = full.read_bytes()
    full.unlink()
    (root / "truncated.wav").write_bytes(data[: len(data) // 3])
    bad[str(root / "truncated.wav")] = "truncated"
    sf.write(root / "_full.flac", tone(2.0, 16000), 16000, format="FLAC")
    data = (root / "_full.flac").read_bytes()
    (root / "_full.flac").unlink()
    (root / "truncated.flac").write_bytes(data[: len(data) // 2])
    bad[str(root / "truncated.flac")] = "truncated"
    (root / "notes.wav").write_text("these are my notes, not audio\n" * 20)
    bad[str(root / "notes.wav")] = "not audio"
    (root / "folder.flac").mkdir()
    bad[str(root / "folder.flac")] = "directory"
    nan = tone(1.0, 16000)
    nan[100:200] = np.nan
    nan[300] = np.inf
    sf.write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    bad[str(root / "nan.wav")] = "NaN"
    os.symlink(root / "does_not_exist.wav", root / "dangling.wav")
    bad[str(root / "dangling.wav")] = "unreadable"
    sf.write(root / "silence.wav", np.zeros(32000, dtype=np.float32), 16000, subtype="PCM_16")
    bad[str(root / "silence.wav")] = "silent"
    sf.write(root / "blip.wav", tone(0.1, 16000), 16000, subtype="PCM_16")
    bad[str(root / "blip.wav")] = "too short"
    return bad
