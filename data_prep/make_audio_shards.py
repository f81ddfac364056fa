#!/usr/bin/env python
"""Turn a corpus of audio files into WebDataset shards for lit-codec.

Reads (``--input``, repeatable; ``--layout``, detected when ``auto``):
  a folder searched recursively for audio in any format soundfile reads (and,
  with ffmpeg installed, m4a/AAC/WMA), a CSV/TSV/JSONL manifest (a path column,
  optional text/speaker/language), or a LibriTTS(-R), VCTK or LJSpeech tree
  (transcripts and speakers from the corpus' own files).

Writes into ``--output DIR``:
  {split}-{NNNNNN}.tar   shards of at most --shard-max-mb / --shard-max-samples,
                         each sample ``{key}.flac`` (mono, --sample-rate,
                         16-bit or 24-bit) + ``{key}.json`` (sample_rate,
                         num_samples, duration, source, segment, offset,
                         speaker/text/language when known, ...)
  index.json             per split: shard files, sample counts, seconds; the settings
  report.json            every input skipped and every segment dropped, with the cause
  .progress/             ledgers that make an interrupted run resumable

Processing: mono mix-down, soxr resampling, optional loudness normalisation
(ITU-R BS.1770), long files cut at quiet points into segments of at most
--max-seconds, silent/short/NaN clips dropped, deterministic train/valid/test
split (by speaker where speakers are known, else by a hash of the file name).

Re-running the same command after an interruption resumes: finished shards are
kept, the rest is written again, identically. Bad files never stop the run; the
exit code is 0 unless --strict and something was skipped.

Example:
  python data_prep/make_audio_shards.py --input data_prep/samples --output data/samples_16k
  python data_prep/make_audio_shards.py --input LibriTTS-R/train-clean-100 --layout libritts \\
      --output data/libritts_24k --sample-rate 24000 --loudness-lufs -23
"""

from __future__ import annotations

import argparse
import sys

from lit_codec.data.prepare import PrepareSettings, prepare_shards


def build_parser() -> argparse.ArgumentParser:
    d = PrepareSettings()
    p = argparse.ArgumentParser(
        prog="make_audio_shards.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--input",
        "-i",
        action="append",
        required=True,
        metavar="PATH",
        help="a folder, a manifest (.csv/.tsv/.jsonl) or a corpus root; repeat for several",
    )
    io.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "folder", "manifest", "libritts", "ljspeech", "vctk"],
        help="how to read --input (default: detect from its contents)",
    )
    io.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="DIR",
        help="directory for shards, index.json, report.json",
    )
    io.add_argument(
        "--overwrite", action="store_true", help="delete shards of an earlier, different run in DIR"
    )
    io.add_argument(
        "--vctk-mic",
        default="mic1",
        choices=["mic1", "mic2", "both"],
        help="VCTK 0.92 microphone(s) to use",
    )
    io.add_argument(
        "--no-ffmpeg",
        action="store_true",
        help="never fall back to ffmpeg for formats soundfile cannot read",
    )
    audio = p.add_argument_group("audio")
    audio.add_argument(
        "--sample-rate",
        type=int,
        default=d.sample_rate,
        help="target sample rate in Hz (soxr resampling)",
    )
    audio.add_argument(
        "--bit-depth", type=int, default=d.bit_depth, choices=[16, 24], help="FLAC bit depth"
    )
    audio.add_argument(
        "--loudness-lufs",
        type=float,
        default=None,
        metavar="LUFS",
        help="normalise each file to this integrated loudness, e.g. -23 (default: keep levels)",
    )
    audio.add_argument(
        "--max-seconds",
        type=float,
        default=d.max_seconds,
        help="cut longer files into segments of at most this",
    )
    audio.add_argument(
        "--min-seconds",
        type=float,
        default=d.min_seconds,
        help="drop clips and segments shorter than this",
    )
    audio.add_argument(
        "--silence-dbfs",
        type=float,
        default=d.silence_dbfs,
        help="drop clips whose loudest 20 ms frame is below this level",
    )
    split = p.add_argument_group("splits and shards")
    split.add_argument(
        "--valid-fraction",
        type=float,
        default=d.valid_fraction,
        help="share of speakers/files for validation",
    )
    split.add_argument(
        "--test-fraction",
        type=float,
        default=d.test_fraction,
        help="share of speakers/files for test",
    )
    split.add_argument(
        "--split-by",
        default=d.split_by,
        choices=["auto", "speaker", "file"],
        help="auto: by speaker when every file has one and there are >= 10 speakers, else by file",
    )
    split.add_argument(
        "--all-to",
        default=None,
        choices=["train", "valid", "test"],
        help="put everything into one split (e.g. an evaluation set)",
    )
    split.add_argument("--salt", default=d.salt, help="changes which files fall into which split")
    split.add_argument(
        "--shard-max-mb", type=float, default=d.shard_max_mb, help="maximum shard size in MB"
    )
    split.add_argument(
        "--shard-max-samples",
        type=int,
        default=d.shard_max_samples,
        help="maximum samples per shard",
    )
    run = p.add_argument_group("running")
    run.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: all cores)"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument(
        "--strict",
        action="store_true",
        help="exit with status 1 if any input was skipped or dropped",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = PrepareSettings(
            sample_rate=args.sample_rate, bit_depth=args.bit_depth, loudness_lufs=args.loudness_lufs,
            max_seconds=args.max_seconds, min_seconds=args.min_seconds, silence_dbfs=args.silence_dbfs,
            valid_fraction=args.valid_fraction, test_fraction=args.test_fraction, split_by=args.split_by,
            all_to=args.all_to, shard_max_mb=args.shard_max_mb, shard_max_samples=args.shard_max_samples,
            salt=args.salt, use_ffmpeg=not args.no_ffmpeg,
        )  # fmt: skip
        result = prepare_shards(
            args.input, args.output, settings, layout=args.layout, workers=args.workers,
            overwrite=args.overwrite, progress=not args.no_progress, vctk_mic=args.vctk_mic,
        )  # fmt: skip
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"make_audio_shards: error: {e}", file=sys.stderr)
        return 2
    for entry in result.skipped[:20]:
        print(
            f"skipped {entry['path']}: {entry['reason']}"
            + (f" ({entry['detail']})" if entry["detail"] else "")
        )
    if len(result.skipped) > 20:
        print(f"... and {len(result.skipped) - 20} more skipped files (see report.json)")
    print(result.summary())
    if args.strict and (result.files_skipped or result.segments_dropped):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
