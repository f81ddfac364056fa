"""Finding the audio files of a corpus and their metadata.

Layouts:

- ``folder``: every audio file below a directory (recursively, symbolic links
  followed), no metadata;
- ``manifest``: a CSV, TSV or JSONL file with a path column (``path``,
  ``audio``, ``audio_path``, ``audio_filepath``, ``file``, ``filename``, ``wav``
  or ``flac``) and optional ``text``, ``speaker`` and ``language`` columns;
  relative paths are relative to the manifest's folder (or, failing that, to
  the folder above it or the working directory); other columns are kept as
  extra metadata;
- ``libritts``: LibriTTS and LibriTTS-R (``<subset>/<speaker>/<chapter>/<utt>.wav``
  with ``<utt>.normalized.txt``/``<utt>.original.txt`` beside it);
- ``ljspeech``: LJSpeech (``metadata.csv`` with ``id|text|normalized text`` and
  ``wavs/<id>.wav``), one speaker;
- ``vctk``: VCTK 0.80 (``wav48/<spk>/<utt>.wav``) or 0.92
  (``wav48_silence_trimmed/<spk>/<utt>_mic1.flac``) with ``txt/<spk>/<utt>.txt``
  and ``speaker-info.txt``.

:func:`discover` returns the inputs in a deterministic order and the paths it
had to skip (with the reason), never raising for a bad file.
"""

from __future__ import annotations

import csv
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from lit_codec.data.audio_io import AUDIO_EXTENSIONS

__all__ = ["AudioInput", "Discovery", "Layout", "detect_layout", "discover"]

Layout = Literal["auto", "folder", "manifest", "libritts", "ljspeech", "vctk"]

PATH_COLUMNS = ("path", "audio", "audio_path", "audio_filepath", "file", "filename", "wav", "flac")
TEXT_COLUMNS = ("text", "transcript", "transcription", "sentence", "normalized_text")
SPEAKER_COLUMNS = ("speaker", "speaker_id", "spk", "client_id", "speaker_or_source")
LANGUAGE_COLUMNS = ("language", "lang", "locale")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".jsonl", ".json")


@dataclass
class AudioInput:
    """One file to prepare, with what is known about it."""

    path: str  # path as found (joined with the input root)
    name: str  # stable identity: input root name + path relative to it, '/'-separated
    speaker: str | None = None
    text: str | None = None
    language: str | None = None
    extra: dict[str, str] = field(default_factory=dict)


@dataclass
class Discovery:
    """Inputs found, in a deterministic order, and the paths skipped while looking."""

    inputs: list[AudioInput]
    skipped: list[dict[str, str]]  # {"path", "reason", "detail", "stage": "discover"}
    layouts: list[str]


def detect_layout(root: Path) -> str:
    """Guess the layout of ``root`` (a directory or a manifest file)."""
    if root.is_file():
        return "manifest"
    if (root / "metadata.csv").is_file() and (root / "wavs").is_dir():
        return "ljspeech"
    if (root / "txt").is_dir() and any(
        (root / d).is_dir() for d in ("wav48", "wav48_silence_trimmed")
    ):
        return "vctk"
    if next(root.rglob("*.normalized.txt"), None) is not None:
        return "libritts"
    return "folder"


def discover(
    roots: list[str | os.PathLike], layout: Layout = "auto", vctk_mic: str = "mic1"
) -> Discovery:
    """Find every input below ``roots`` (directories or manifests)."""
    inputs: list[AudioInput] = []
    skipped: list[dict[str, str]] = []
    layouts = []
    for root in map(Path, roots):
        if not root.exists():
            raise FileNotFoundError(f"input {root} does not exist")
        kind = detect_layout(root) if layout == "auto" else layout
        layouts.append(kind)
        finder = {
            "folder": _folder,
            "manifest": _manifest,
            "libritts": _libritts,
            "ljspeech": _ljspeech,
            "vctk": lambda r, s: _vctk(r, s, vctk_mic),
        }[kind]
        found = finder(root, skipped)
        inputs.extend(sorted(found, key=lambda i: i.name))
    seen: set[str] = set()
    unique = []
    for item in inputs:
        if item.name in seen:
            skipped.append(_skip(item.path, "duplicate", "listed twice"))
            continue
        seen.add(item.name)
        unique.append(item)
    return Discovery(unique, skipped, layouts)


def _skip(path, reason: str, detail: str = "") -> dict[str, str]:
    return {"path": str(path), "reason": reason, "detail": detail, "stage": "discover"}


def _walk_audio(root: Path, skipped: list[dict[str, str]]) -> list[Path]:
    """Audio-named entries below root; directories named like audio are skipped."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True, onerror=None):
        base = Path(dirpath)
        for d in sorted(dirnames):
            if d.lower().endswith(AUDIO_EXTENSIONS):
                skipped.append(
                    _skip(base / d, "not a file", "a directory named like an audio file")
                )
        for name in filenames:
            if name.lower().endswith(AUDIO_EXTENSIONS) and not name.startswith("._"):
                found.append(base / name)
    return sorted(found)


def _name(root: Path, path: Path) -> str:
    try:
        rel = path.relative_to(root).as_posix()
    except ValueError:
        rel = path.as_posix().lstrip("/")
    return f"{root.resolve().name}/{rel}"


def _folder(root: Path, skipped) -> list[AudioInput]:
    return [AudioInput(str(p), _name(root, p)) for p in _walk_audio(root, skipped)]


def _pick(row: dict[str, str], columns: tuple[str, ...]) -> str | None:
    lowered = {k.lower().strip(): k for k in row if k is not None}
    for c in columns:
        if c in lowered:
            value = row[lowered[c]]
            if value is not None and str(value).strip() not in ("", "-"):
                return str(value).strip()
    return None


def _manifest(manifest: Path, skipped) -> list[AudioInput]:
    suffix = manifest.suffix.lower()
    rows: list[dict] = []
    with open(manifest, newline="", encoding="utf-8") as f:
        if suffix in (".jsonl", ".json"):
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        skipped.append(_skip(f"{manifest}:{n}", "bad manifest line", str(e)))
        else:
            sample = f.read(4096)
            f.seek(0)
            delimiter = "\t" if suffix == ".tsv" or sample.count("\t") > sample.count(",") else ","
            rows = list(csv.DictReader(f, delimiter=delimiter))
    if rows and _pick({k: "x" for k in rows[0]}, PATH_COLUMNS) is None:
        raise ValueError(
            f"manifest {manifest} has no path column (one of {', '.join(PATH_COLUMNS)})"
        )
    known = {
        c
        for group in (PATH_COLUMNS, TEXT_COLUMNS, SPEAKER_COLUMNS, LANGUAGE_COLUMNS)
        for c in group
    }
    out = []
    for n, row in enumerate(rows, 2 if suffix not in (".jsonl", ".json") else 1):
        rel = _pick(row, PATH_COLUMNS)
        if rel is None:
            skipped.append(_skip(f"{manifest}:{n}", "bad manifest line", "empty path"))
            continue
        path = _resolve(manifest, rel)
        extra = {
            str(k): str(v)
            for k, v in row.items()
            if k is not None and str(k).lower() not in known and v not in (None, "")
        }
        out.append(
            AudioInput(
                str(path),
                f"{manifest.resolve().parent.name}/{rel}",
                speaker=_pick(row, SPEAKER_COLUMNS),
                text=_pick(row, TEXT_COLUMNS),
                language=_pick(row, LANGUAGE_COLUMNS),
                extra=extra,
            )
        )
    return out


def _resolve(manifest: Path, rel: str) -> Path:
    """A manifest path: absolute, else relative to the manifest's folder, else to
    a folder above it or the working directory (whichever holds the file)."""
    if os.path.isabs(rel):
        return Path(rel)
    candidates = [manifest.parent / rel, manifest.parent.parent / rel, Path.cwd() / rel]
    return next((c for c in candidates if os.path.lexists(c)), candidates[0])


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _libritts(root: Path, skipped) -> list[AudioInput]:
    out = []
    for p in _walk_audio(root, skipped):
        stem = p.name.split(".")[0]
        text = _read_text(p.with_name(stem + ".normalized.txt")) or _read_text(
            p.with_name(stem + ".original.txt")
        )
        speaker = stem.split("_")[0] if "_" in stem else p.parent.parent.name
        out.append(AudioInput(str(p), _name(root, p), speaker=speaker, text=text, language="en"))
    return out


def _ljspeech(root: Path, skipped) -> list[AudioInput]:
    texts: dict[str, str] = {}
    with open(root / "metadata.csv", encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("|")
            if len(parts) >= 2:
                texts[parts[0]] = parts[2] if len(parts) > 2 and parts[2] else parts[1]
    out = []
    for p in _walk_audio(root / "wavs", skipped):
        out.append(
            AudioInput(str(p), _name(root, p), speaker="LJ", text=texts.get(p.stem), language="en")
        )
    listed = {p.stem for p in (root / "wavs").iterdir()} if (root / "wavs").is_dir() else set()
    for missing in sorted(set(texts) - listed):
        skipped.append(
            _skip(
                root / "wavs" / f"{missing}.wav",
                "unreadable path",
                "listed in metadata.csv but missing",
            )
        )
    return out


def _vctk(root: Path, skipped, mic: str) -> list[AudioInput]:
    info: dict[str, dict[str, str]] = {}
    info_file = root / "speaker-info.txt"
    if info_file.is_file():
        lines = info_file.read_text(encoding="utf-8", errors="replace").splitlines()
        header = [h.lower() for h in re.split(r"\s+", lines[0].strip())] if lines else []
        for line in lines[1:]:
            parts = re.split(r"\s+", line.strip(), maxsplit=len(header) - 1) if header else []
            if parts and parts[0]:
                spk = parts[0] if parts[0].startswith(("p", "s")) else f"p{parts[0]}"
                info[spk] = {
                    h: v
                    for h, v in zip(header[1:], parts[1:])
                    if h in ("age", "gender", "accents", "region")
                }
    wav_dir = (
        root / "wav48_silence_trimmed"
        if (root / "wav48_silence_trimmed").is_dir()
        else root / "wav48"
    )
    out = []
    for p in _walk_audio(wav_dir, skipped):
        stem = p.name.split(".")[0]
        match = re.match(r"^(.+?)(?:_(mic[12]))?$", stem)
        utt, this_mic = match.group(1), match.group(2)
        if this_mic and mic != "both" and this_mic != mic:
            continue
        speaker = p.parent.name
        text = _read_text(root / "txt" / speaker / f"{utt}.txt")
        out.append(
            AudioInput(
                str(p),
                _name(root, p),
                speaker=speaker,
                text=text,
                language="en",
                extra=info.get(speaker, {}),
            )
        )
    return out
