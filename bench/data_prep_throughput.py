"""Data preparation throughput: lit-codec's shard preparation against a plain script.

Both turn the same audio into WebDataset shards of 24 kHz mono FLAC, on one core:

- ours: :func:`lit_codec.data.prepare.prepare_shards` (the engine of
  ``data_prep/make_audio_shards.py``) with ``workers=1`` (one worker process decodes,
  checks for NaN/inf, mixes to mono, resamples with soxr, checks for silence, plans
  segments, encodes FLAC; the parent writes the train/valid/test shards, index.json,
  report.json and the resume ledgers), default settings but ``sample_rate=24000``;
- peer: the straightforward single-process script a researcher would write: for each file,
  ``soundfile.read`` -> mean over channels -> ``soxr.resample`` -> FLAC (16-bit) into memory
  -> ``webdataset.TarWriter`` (``{key}.flac`` + ``{key}.json``), nothing else.

Input: the shipped samples (``data_prep/samples``, about 5 minutes of 16 kHz FLAC) or the
audio under ``--input DIR``, first converted (untimed) into 44.1 kHz *stereo* 16-bit WAV in a
temporary folder, so that both sides decode, mix down and resample as on a typical corpus.

Figure: seconds of audio processed per wall-clock second (x real time) with one worker,
i.e. per core. The two sides run in alternating rounds after a warm-up round; each figure
is the median over rounds. Goal (issue 2): ours >= 100x real time per core.

Run: ``OMP_NUM_THREADS=1 python bench/data_prep_throughput.py [--rounds 3] [--input DIR]
[--max-seconds 600]``. The last line is ``ratio: X``, ours / peer (X > 1: lit-codec is faster).
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import tempfile
from pathlib import Path

import _common  # noqa: F401  (one thread, before numpy/torch)
import numpy as np
import soundfile as sf
import soxr
from _common import audio_files, compare, print_ratio

from lit_codec.data.prepare import PrepareSettings, prepare_shards

SOURCE_RATE = 44_100
TARGET_RATE = 24_000
GOAL = 100.0


def make_source(folder: str | None, out: Path, max_seconds: float) -> float:
    """Write the input audio as 44.1 kHz stereo 16-bit WAV into ``out``; returns its seconds."""
    total = 0.0
    for i, path in enumerate(audio_files(folder)):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        mono = audio.mean(axis=1, dtype=np.float32)  # (T,)
        wav = soxr.resample(mono, rate, SOURCE_RATE).astype(np.float32)
        stereo = np.stack([wav, 0.8 * wav], axis=1)  # (T, 2): two different channels
        sf.write(
            out / f"{i:05d}_{path.stem}.wav", np.clip(stereo, -1, 1), SOURCE_RATE, subtype="PCM_16"
        )
        total += len(wav) / SOURCE_RATE
        if total >= max_seconds:
            break
    return total


def ours(source: Path, work: Path) -> None:
    """lit-codec: prepare_shards with one worker process into a fresh directory."""
    out = Path(tempfile.mkdtemp(dir=work))
    try:
        prepare_shards(
            [source], out, PrepareSettings(sample_rate=TARGET_RATE), workers=1, progress=False
        )
    finally:
        shutil.rmtree(out)


def peer(source: Path, work: Path) -> None:
    """The plain script: read, mono, soxr, FLAC, TarWriter; one process."""
    import webdataset as wds

    out = Path(tempfile.mkdtemp(dir=work))
    try:
        with wds.TarWriter(str(out / "train-000000.tar")) as sink:
            for path in sorted(source.glob("*.wav")):
                audio, rate = sf.read(path, dtype="float32", always_2d=True)
                mono = audio.mean(axis=1)  # (T,)
                mono = soxr.resample(mono, rate, TARGET_RATE)
                buffer = io.BytesIO()
                sf.write(buffer, np.clip(mono, -1, 1), TARGET_RATE, format="FLAC", subtype="PCM_16")
                meta = {"sample_rate": TARGET_RATE, "num_samples": len(mono), "source": str(path)}
                sink.write(
                    {
                        "__key__": path.stem,
                        "flac": buffer.getvalue(),
                        "json": json.dumps(meta).encode(),
                    }
                )
    finally:
        shutil.rmtree(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--input", default=None, help="audio folder (default: data_prep/samples)")
    parser.add_argument(
        "--max-seconds", type=float, default=600.0, help="use at most this much audio"
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds of each side")
    args = parser.parse_args()
    _common.one_thread()

    with tempfile.TemporaryDirectory() as tmp:
        source, work = Path(tmp) / "source", Path(tmp) / "work"
        source.mkdir()
        work.mkdir()
        seconds = make_source(args.input, source, args.max_seconds)
        files = len(list(source.glob("*.wav")))
        print(
            f"input: {files} files, {seconds:.1f} s of 44.1 kHz stereo WAV -> 24 kHz mono FLAC shards"
        )
        times = compare(
            {"ours": lambda: ours(source, work), "peer": lambda: peer(source, work)},
            rounds=args.rounds,
            warmup=1,
        )
    rtf = {name: seconds / t for name, t in times.items()}
    print(f"one core, median of {args.rounds} alternating rounds")
    print(f"lit-codec prepare_shards (workers=1): {rtf['ours']:7.1f}x real time per core "
          f"(goal: >= {GOAL:g}x: {'met' if rtf['ours'] >= GOAL else 'NOT met'})")  # fmt: skip
    print(f"plain soundfile/soxr/TarWriter script: {rtf['peer']:7.1f}x real time per core")
    print(f"ours / peer: {rtf['ours'] / rtf['peer']:.2f}")
    print_ratio(rtf["ours"] / rtf["peer"])


if __name__ == "__main__":
    main()
