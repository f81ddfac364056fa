"""``lit-codec score``: quality metrics of any reference/degraded pair of audio files.

    lit-codec score --reference ref.wav --degraded out.wav
    lit-codec score --reference refs/ --degraded outs/ --metrics pesq,stoi,visqol_speech --json

Two files, or two folders whose files are paired by their path relative to the folder
without the extension (``a/b.wav`` pairs with ``a/b.opus``). Files of any format, rate and
channel count are read with :func:`lit_codec.data.audio_io.read_audio` and mixed to mono by
averaging the channels (as ViSQOL does); a degraded file at another rate is resampled to the
reference's rate with soxr. A constant delay is removed by cross-correlation
(:func:`~lit_codec.metrics.functional.align`) before scoring with
:func:`~lit_codec.metrics.functional.score_pair`. Prints a table, or JSON with ``--json``.

Metric names are those of :data:`lit_codec.metrics.functional.METRICS`: ``pesq``,
``pesq_nb``, ``stoi``, ``estoi``, ``sisdr``, ``mel``, ``lsd``, ``visqol_speech``,
``visqol_audio``, and the octave levels ``level_1k``, ``level_2k``, ``level_4k``,
``level_8k`` (dB against the reference: 0 is best, negative is too quiet, as muffled highs
are). A pair a metric cannot score (silence, too short, an octave past Nyquist) shows as
``skipped`` (``null`` in JSON) and is left out of the means.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from lit_codec.commands.common import add_threads_argument, set_threads
from lit_codec.metrics.functional import METRICS, align, check_metric_names, score_pair
from lit_codec.metrics.report import format_table, summarize

__all__ = [
    "DEFAULT_METRICS",
    "PairResult",
    "load_pair",
    "pair_folders",
    "score_files",
    "score_main",
]

DEFAULT_METRICS = ("pesq", "stoi", "estoi", "sisdr", "mel", "visqol_speech")


@dataclass
class PairResult:
    """The scores of one reference/degraded pair."""

    name: str  # the pair's name (the file's relative path without extension for folders)
    reference: str
    degraded: str
    sample_rate: int  # rate the pair was scored at (the reference's)
    delay: int  # samples removed from the start of degraded (negative: of reference)
    scores: dict[str, float | None]  # None: the metric could not score this pair

    @property
    def delay_ms(self) -> float:
        return 1000.0 * self.delay / self.sample_rate


def load_pair(
    reference: str | os.PathLike, degraded: str | os.PathLike
) -> tuple[np.ndarray, np.ndarray, int]:
    """Read two audio files as mono float32 at the reference's rate.

    Returns:
        ``(reference (T,), degraded (T',), sample_rate)``.

    Raises:
        ValueError: a file cannot be read (the message names it and says why).
    """
    from lit_codec.data.audio_io import AudioError, read_audio, resample, to_mono

    decoded = []
    for path in (reference, degraded):
        try:
            decoded.append(read_audio(path))
        except AudioError as e:
            raise ValueError(
                f"cannot read {path}: {e.reason}" + (f" ({e.detail})" if e.detail else "")
            ) from None
    ref, deg = decoded
    rate = ref.sample_rate
    return to_mono(ref.samples), resample(to_mono(deg.samples), deg.sample_rate, rate), rate


def score_files(
    reference: str | os.PathLike,
    degraded: str | os.PathLike,
    metrics: Sequence[str],
    max_delay_ms: float = 250.0,
    name: str | None = None,
) -> PairResult:
    """Read, align and score one pair of files (see the module docstring).

    Args:
        reference: the clean file.
        degraded: the file to score.
        metrics: names from :data:`~lit_codec.metrics.functional.METRICS`.
        max_delay_ms: largest constant delay searched, in milliseconds (0: no alignment).
        name: the pair's name in reports; the reference's file name by default.

    Raises:
        ValueError: a file cannot be read, or unknown metric names.
    """
    ref, deg, rate = load_pair(reference, degraded)
    max_delay = int(round(max_delay_ms * rate / 1000))
    ref, deg, delay = align(ref, deg, max_delay)
    scores = score_pair(ref, deg, rate, metrics)
    return PairResult(
        name or Path(reference).name, str(reference), str(degraded), rate, delay, scores
    )


def _audio_files(root: Path) -> dict[str, list[Path]]:
    from lit_codec.data.audio_io import AUDIO_EXTENSIONS

    found: dict[str, list[Path]] = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix.lower() in AUDIO_EXTENSIONS:
            found.setdefault(path.relative_to(root).with_suffix("").as_posix(), []).append(path)
    return found


def pair_folders(
    reference: str | os.PathLike, degraded: str | os.PathLike
) -> tuple[list[tuple[str, Path, Path]], list[str]]:
    """Pair the audio files of two folders by relative path without extension.

    Returns:
        ``(pairs, problems)``: ``(name, reference file, degraded file)`` sorted by name, and
        a message for every file left unpaired or paired ambiguously.
    """
    refs, degs = _audio_files(Path(reference)), _audio_files(Path(degraded))
    pairs: list[tuple[str, Path, Path]] = []
    problems: list[str] = []
    for name, ref_files in refs.items():
        deg_files = degs.get(name, [])
        if len(ref_files) > 1 or len(deg_files) > 1:
            problems.append(
                f"{name}: several files share this name ({', '.join(p.name for p in ref_files + deg_files)})"
            )
        elif not deg_files:
            problems.append(f"{ref_files[0]}: no degraded file named {name}.* in {degraded}")
        else:
            pairs.append((name, ref_files[0], deg_files[0]))
    for name, deg_files in degs.items():
        if name not in refs:
            problems.append(f"{deg_files[0]}: no reference file named {name}.* in {reference}")
    return pairs, problems


def _value(v: float | None, metric: str) -> str:
    if v is None:
        return "skipped"
    return f"{v:.2f}" if metric == "sisdr" else f"{v:.3f}"


def _score_job(job: tuple[str, str, str, tuple[str, ...], float]) -> PairResult | str:
    name, reference, degraded, metrics, max_delay_ms = job
    try:
        return score_files(reference, degraded, metrics, max_delay_ms, name=name)
    except ValueError as e:
        return str(e)


def _worker_init(threads: int) -> None:
    set_threads(threads)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lit-codec score",
        description="Score degraded audio against references (files or two folders paired by name).",
    )
    p.add_argument("--reference", required=True, help="reference audio file, or a folder of them")
    p.add_argument(
        "--degraded",
        required=True,
        help="degraded audio file, or a folder paired with --reference by name",
    )
    p.add_argument(
        "--metrics",
        default=",".join(DEFAULT_METRICS),
        help=f"comma-separated metrics from: {', '.join(METRICS)} (default: %(default)s)",
    )
    p.add_argument(
        "--max-delay-ms",
        type=float,
        default=250.0,
        help="largest constant delay removed before scoring (0: none)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes for folders (default: 1, in this process)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_threads_argument(p, per=" per process")
    return p


def score_main(argv: list[str]) -> int:
    """Entry point of ``lit-codec score``; returns the exit status.

    0: every pair scored; 1: some files could not be read or paired (the others are
    reported); 2: nothing could be scored (bad arguments, unreadable single pair).
    """
    args = _parser().parse_args(argv)
    threads = set_threads(args.threads)
    try:
        metrics = check_metric_names([m.strip() for m in args.metrics.split(",") if m.strip()])
    except ValueError as e:
        print(f"lit-codec score: {e}", file=sys.stderr)
        return 2
    ref, deg = Path(args.reference), Path(args.degraded)
    problems: list[str] = []
    if ref.is_dir() != deg.is_dir() and ref.exists() and deg.exists():
        print(
            "lit-codec score: --reference and --degraded must both be files or both be folders",
            file=sys.stderr,
        )
        return 2
    if ref.is_dir():
        jobs, problems = pair_folders(ref, deg)
        if not jobs:
            print(f"lit-codec score: no files of {ref} and {deg} pair up by name", file=sys.stderr)
            for msg in problems:
                print(f"  {msg}", file=sys.stderr)
            return 2
    else:
        jobs = [(ref.name, ref, deg)]
    work = [(name, str(r), str(d), metrics, args.max_delay_ms) for name, r, d in jobs]
    if args.workers > 1 and len(work) > 1:
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(
            min(args.workers, len(work)),
            mp_context=context,
            initializer=_worker_init,
            initargs=(threads,),
        ) as pool:
            outcomes = list(pool.map(_score_job, work))
    else:
        outcomes = [_score_job(job) for job in work]
    results = [o for o in outcomes if isinstance(o, PairResult)]
    problems += [o for o in outcomes if isinstance(o, str)]
    for msg in problems:
        print(f"lit-codec score: {msg}", file=sys.stderr)
    if not results:
        return 2
    summary = {m: summarize([r.scores[m] for r in results]) for m in metrics}
    if args.json:
        out = {
            "metrics": list(metrics),
            "max_delay_ms": args.max_delay_ms,
            "pairs": [{**asdict(r), "delay_ms": r.delay_ms} for r in results],
            "summary": {m: asdict(s) for m, s in summary.items()},
            "problems": problems,
        }
        print(json.dumps(out, indent=2))
    else:
        rows = [
            [r.name, f"{r.delay_ms:.1f}", *(_value(r.scores[m], m) for m in metrics)]
            for r in results
        ]
        if len(results) > 1:
            rows.append(["mean", "", *(_value(summary[m].mean, m) for m in metrics)])
            rows.append(["skipped", "", *(str(summary[m].skipped) for m in metrics)])
        print(format_table(["pair", "delay ms", *metrics], rows))
    return 1 if problems else 0
