"""Tiny audio shards with speakers, transcripts and languages, and a tiny codec export,
for the token-shard tests."""

from __future__ import annotations

import csv
from pathlib import Path

import soundfile as sf

from lit_codec.data.prepare import PrepareSettings, prepare_shards

from ..tiny_codecs import tiny_seanet_codec
from .corpus_factory import tone

RATE = 8000  # the tiny codecs' rate
TEXTS = ("hello world", "good morning", "the cat sat", "a small test")


def write_midi(path: Path) -> Path:
    """A one-track MIDI file of two notes (C4, E4), written without any MIDI package."""

    def vlq(n: int) -> bytes:  # MIDI variable-length quantity
        out = [n & 0x7F]
        while n > 0x7F:
            n >>= 7
            out.append(0x80 | (n & 0x7F))
        return bytes(reversed(out))

    notes = [(0, (0x90, 60, 64)), (240, (0x80, 60, 0)), (0, (0x90, 64, 64)), (240, (0x80, 64, 0))]
    events = b"".join(vlq(dt) + bytes(msg) for dt, msg in notes) + b"\x00\xff\x2f\x00"
    header = b"MThd" + (6).to_bytes(4, "big") + bytes([0, 0, 0, 1, 1, 224])  # 480 ticks/beat
    path.write_bytes(header + b"MTrk" + len(events).to_bytes(4, "big") + events)
    return path


def write_speech_manifest(root: Path, speakers: int = 4, per_speaker: int = 3) -> Path:
    """Clips of 0.6-1.1 s, ``speakers`` x ``per_speaker``, in a CSV manifest with text,
    speaker, language and a MIDI file; clip 1 of speaker 0 has no transcript, clip 2 of
    speaker 1 an unsupported language ("xx"), clip 0 of speaker 2 a MIDI file that is not
    one. Returns the manifest path."""
    root.mkdir(parents=True, exist_ok=True)
    song = write_midi(root / "song.mid")
    broken = root / "broken.mid"
    broken.write_bytes(b"not a MIDI file")
    rows = []
    for s in range(speakers):
        for u in range(per_speaker):
            n = s * per_speaker + u
            path = root / f"spk{s}" / f"utt{u}.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            sf.write(path, tone(0.6 + 0.1 * (n % 6), RATE, seed=n), RATE, subtype="PCM_16")
            text = "" if (s, u) == (0, 1) else TEXTS[n % len(TEXTS)]
            language = "xx" if (s, u) == (1, 2) else "en"
            midi = str(broken if (s, u) == (2, 0) else song)
            row = {"path": str(path), "text": text, "speaker": f"spk{s}", "language": language}
            rows.append({**row, "midi": midi})
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return manifest


def make_audio_shards(root: Path, rate: int = RATE, **settings) -> Path:
    """Audio shards of :func:`write_speech_manifest` clips at ``rate``; returns their folder."""
    manifest = write_speech_manifest(root / "corpus")
    out = root / f"audio_{rate}"
    options = dict(sample_rate=rate, valid_fraction=0.0, test_fraction=0.0, shard_max_samples=5)
    prepare_shards(
        [manifest], out, PrepareSettings(**{**options, **settings}), progress=False, workers=1
    )
    return out


def export_tiny_codec(path: Path, quantizer: str = "rvq") -> Path:
    """The 8 kHz tiny SEANet codec (hop 8, 3 codebooks) exported as ``.safetensors``."""
    return tiny_seanet_codec(quantizer).export(path)
