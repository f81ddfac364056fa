"""Rebuild ``data_prep/samples/`` from the development corpus (maintainers only).

Reads the corpus that ``../shared/data/build_dev_corpus.sh OUT`` writes (16 kHz
mono WAV clips with a ``manifest.csv`` per folder) and writes, deterministically:

- ``samples/speech/{en,es,fr}/*.flac``: about 4 minutes of voice prompts
  (two professional voices, three languages),
- ``samples/music/*.flac``: about 1 minute of music-on-hold, one clip per piece,
- ``samples/manifest.csv``: path, duration, speaker, language, source package,
  license and the original file of every clip,
- ``samples/ATTRIBUTION.md``: the sources and their license (CC-BY-SA-3.0).

Usage: python data_prep/build_samples.py DEV_CORPUS_DIR [--output data_prep/samples]
"""

from __future__ import annotations

import argparse
import csv
import random
from pathlib import Path

import soundfile as sf

# seconds of speech per language, seconds of music
SPEECH_BUDGET = {"en": 90.0, "es": 60.0, "fr": 90.0}
MUSIC_CLIPS = 6
MIN_CLIP_S = 3.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("corpus", type=Path, help="output folder of build_dev_corpus.sh")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "samples")
    args = parser.parse_args()
    rows_out = []
    rng = random.Random(2026)
    for lang, budget in SPEECH_BUDGET.items():
        rows = [
            r
            for r in _manifest(args.corpus / f"speech_{lang}")
            if float(r["duration"]) >= MIN_CLIP_S
        ]
        rng.shuffle(rows)
        total = 0.0
        for r in rows:
            if total >= budget:
                break
            total += float(r["duration"])
            rows_out.append(_copy(args.corpus, r, args.output / "speech" / lang))
    pieces: dict[str, list[dict]] = {}
    for r in _manifest(args.corpus / "music"):
        pieces.setdefault(Path(r["orig_file"]).stem, []).append(r)
    # round robin over the pieces, so every piece is heard
    music = [
        clip
        for group in zip(*(pieces[p][1:] + pieces[p][:1] for p in sorted(pieces)))
        for clip in group
    ]
    for row in music[:MUSIC_CLIPS]:
        rows_out.append(_copy(args.corpus, row, args.output / "music"))
    with open(args.output / "manifest.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows_out[0]))
        writer.writeheader()
        writer.writerows(sorted(rows_out, key=lambda r: r["path"]))
    packages = sorted({r["source_package"] for r in rows_out})
    lines = [
        "# Sample audio: sources and license",
        "",
        "Every file in this folder was cut from audio shipped by these Debian packages",
        "(16 kHz mono, stored as 16-bit FLAC). They are licensed under the Creative",
        "Commons Attribution-ShareAlike 3.0 license (CC-BY-SA-3.0,",
        "https://creativecommons.org/licenses/by-sa/3.0/); this folder is distributed",
        "under the same license. `manifest.csv` names the original file of every clip.",
        "",
        "| package | content | author | license |",
        "| --- | --- | --- | --- |",
    ]
    credits = {
        "asterisk-core-sounds-en-g722": ("English voice prompts", "Allison Smith; Digium, Inc."),
        "asterisk-core-sounds-es-g722": ("Spanish voice prompts", "Allison Smith; Digium, Inc."),
        "asterisk-core-sounds-fr-g722": ("French voice prompts", "June Wallack; Digium, Inc."),
        "asterisk-moh-opsound-g722": (
            "music on hold",
            "opsound.org artists (macroform and others)",
        ),
    }
    for p in packages:
        what, who = credits.get(p, ("", ""))
        lines.append(f"| {p} | {what} | {who} | CC-BY-SA-3.0 |")
    lines += ["", "Rebuild with `python data_prep/build_samples.py DEV_CORPUS_DIR`.", ""]
    (args.output / "ATTRIBUTION.md").write_text("\n".join(lines))
    speech = sum(float(r["duration"]) for r in rows_out if r["path"].startswith("speech"))
    music = sum(float(r["duration"]) for r in rows_out if r["path"].startswith("music"))
    print(
        f"wrote {len(rows_out)} clips: {speech:.0f} s speech, {music:.0f} s music -> {args.output}"
    )


def _manifest(folder: Path) -> list[dict]:
    with open(folder / "manifest.csv", newline="") as f:
        return sorted(csv.DictReader(f), key=lambda r: r["path"])


def _copy(corpus: Path, row: dict, dest: Path) -> dict:
    dest.mkdir(parents=True, exist_ok=True)
    src = corpus / row["path"]
    audio, sr = sf.read(src, dtype="int16")
    out = dest / (src.stem + ".flac")
    sf.write(out, audio, sr, subtype="PCM_16", format="FLAC")
    speaker = row["speaker_or_source"]
    return {
        "path": str(
            out.relative_to(dest.parents[1] if dest.parent.name == "speech" else dest.parent)
        ),
        "duration": f"{len(audio) / sr:.3f}",
        "speaker": "" if speaker in ("-", "moh") else speaker.split(" (")[0],
        "language": "" if row["language"] == "-" else row["language"],
        "source_package": row["source_package"],
        "license": row["license"],
        "orig_file": row["orig_file"],
    }


if __name__ == "__main__":
    main()
