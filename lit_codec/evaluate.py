"""``lit-codec evaluate``: a codec's rate–distortion report over a set of clips.

    lit-codec evaluate --ckpt runs/x/checkpoints/last.ckpt --input clips/ --kbps 1.5,3,6 \\
        --output reports/x [--baseline opus] [--metrics pesq,stoi,visqol_speech] \\
        [--workers 4] [--max-clips 200]

Clips come from a folder of audio files (any format and rate; mixed to mono and resampled
to the codec's rate), a prepared shard directory (its ``--split``, ``test`` by default) or
shard files/patterns (``data/test-{000000..000003}.tar``). Each clip is encoded and decoded
at every bitrate (and, with ``--baseline opus``, through Opus at 6, 8 and 12 kbit/s — see
:mod:`lit_codec.baselines`), a constant delay is removed, and every metric of
:data:`lit_codec.metrics.functional.METRICS` asked for is computed, in worker processes.

Denoising (``--noise-snr 5 [--noise-kind pink] [--denoise]``): each clip is mixed with noise
at that signal-to-noise ratio (drawn from the clip's name, so every run and every system gets
the same noise) and every system codes the noisy mix, scored against the clean clip. A row
``noisy-input`` scores the mix itself; ``--denoise`` adds the codec with its denoising flag
on (``codec+denoise@…``, for codecs trained with one, see :attr:`lit_codec.Codec.denoises_at`).

``REPORT_DIR`` receives:

- ``clips.jsonl``: one line per (clip, system), appended as results arrive. A run started
  again with the same ``--output`` skips the (clip, system) pairs already there, so an
  interrupted evaluation resumes where it stopped.
- ``codes/``: the codec's codes of every clip, from which the codebook figures (per-layer
  usage and perplexity, entropy-coded bitrate) are computed.
- ``report.json``: the codec, every per-clip row, and per system (bitrate) and metric the
  mean ± standard deviation over the scored clips and the number skipped.
- ``report.md``: the same as tables.
- ``rate_distortion.png``: PESQ, STOI and ViSQOL (those computed) against the bitrate
  actually spent, one curve for the codec and one per baseline.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lit_codec.commands.common import add_threads_argument, set_threads
from lit_codec.metrics.functional import METRICS, align, check_metric_names, score_pair
from lit_codec.metrics.report import (
    System,
    build_report,
    plot_rate_distortion,
    report_markdown,
)

__all__ = ["Clip", "count_clips", "evaluate_main", "iter_clips", "noisy_mix"]


@dataclass
class Clip:
    """One clip to evaluate, at the codec's rate."""

    id: str
    audio: np.ndarray  # (T,) float32


@dataclass
class _Config:
    """What every worker needs (sent once, at start)."""

    ckpt: str
    device: str
    metrics: tuple[str, ...]
    max_delay_ms: float
    codes_dir: str
    opus_backend: str | None
    sample_rate: int = 0
    fingerprint: str = ""
    noise: dict[str, Any] | None = None  # {"snr_db": float, "kind": str}: inputs are noisy mixes
    threads: int = 1  # torch threads of each worker process


# --------------------------------------------------------------------------- clips
def _resampled(audio: np.ndarray, rate: int, sample_rate: int) -> np.ndarray:
    from lit_codec.data.audio_io import resample

    return np.ascontiguousarray(resample(np.asarray(audio, dtype=np.float32), rate, sample_rate))


def _shard_urls(source: str, split: str) -> list[str] | None:
    """The shard files of ``source``, or ``None`` when it is a folder of audio files."""
    from lit_codec.data.shards import expand_urls, split_from_root

    path = Path(source)
    if path.is_dir():
        if (path / "index.json").is_file():
            return split_from_root(path, split).urls
        tars = sorted(str(p) for p in path.glob("*.tar"))
        return tars if tars and not _audio_files(path) else None
    if path.is_file() and path.suffix.lower() != ".tar":
        return None
    urls = expand_urls(source)
    if not urls:
        raise FileNotFoundError(f"--input {source}: no such folder, file or shard pattern")
    return urls


def _audio_files(root: Path) -> list[Path]:
    from lit_codec.data.audio_io import AUDIO_EXTENSIONS

    return [
        p for p in sorted(root.rglob("*")) if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
    ]


def count_clips(source: str, split: str = "test", max_clips: int | None = None) -> int | None:
    """How many clips :func:`iter_clips` will yield at most (``None`` when unknown)."""
    urls = _shard_urls(source, split)
    if urls is None:
        path = Path(source)
        n = len(_audio_files(path)) if path.is_dir() else 1
    else:
        n = None
        path = Path(source)
        if path.is_dir() and (path / "index.json").is_file():
            from lit_codec.data.shards import split_from_root

            n = split_from_root(path, split).num_samples
    if n is None:
        return max_clips
    return n if max_clips is None else min(n, max_clips)


def iter_clips(
    source: str,
    sample_rate: int,
    split: str = "test",
    max_clips: int | None = None,
    on_error: Callable[[str, str], None] | None = None,
) -> Iterator[Clip]:
    """The clips of a folder of audio files, a shard directory or shard files, in order.

    Args:
        source: a folder of audio files (searched recursively), an audio file, a directory
            prepared by ``data_prep/make_audio_shards.py``, or shard files/patterns.
        sample_rate: rate the clips are resampled to (soxr).
        split: the split of a prepared shard directory.
        max_clips: stop after this many clips.
        on_error: called with ``(clip or shard, reason)`` for input that cannot be read;
            the clip is skipped.
    """
    report = on_error or (lambda name, reason: None)
    urls = _shard_urls(source, split)
    count = 0

    def clips() -> Iterator[Clip]:
        if urls is None:
            from lit_codec.data.audio_io import AudioError, read_audio, to_mono

            path = Path(source)
            files = _audio_files(path) if path.is_dir() else [path]
            for file in files:
                name = file.relative_to(path).as_posix() if path.is_dir() else file.name
                try:
                    decoded = read_audio(file)
                except AudioError as e:
                    report(name, e.reason + (f" ({e.detail})" if e.detail else ""))
                    continue
                yield Clip(
                    name, _resampled(to_mono(decoded.samples), decoded.sample_rate, sample_rate)
                )
            return
        from lit_codec.data.shards import decode_audio_sample, iter_tar_samples

        def handler(exc: Exception) -> bool:
            report("shards", str(exc))
            return True

        seen: set[str] = set()
        for sample in iter_tar_samples(urls, handler):
            key = str(sample.get("__key__"))
            if key in seen:  # the same key in two shards
                key = f"{Path(str(sample.get('__url__'))).name}/{key}"
            seen.add(key)
            try:
                audio, rate, _ = decode_audio_sample(sample)
            except Exception as e:  # a damaged member: report it and go on
                report(key, str(e))
                continue
            yield Clip(key, _resampled(audio, rate, sample_rate))

    for clip in clips():
        if max_clips is not None and count >= max_clips:
            return
        count += 1
        yield clip


# --------------------------------------------------------------------------- workers
_STATE: dict[str, Any] = {}


def _init_worker(config: _Config, codec: Any = None) -> None:
    if codec is None:
        from lit_codec.codec import Codec

        set_threads(config.threads)
        codec = Codec.from_checkpoint(config.ckpt, map_location=config.device)
    _STATE["codec"] = codec
    _STATE["config"] = config


def _codes_path(codes_dir: str, clip_id: str, n_q: int, family: str = "codec") -> Path:
    digest = hashlib.sha1(clip_id.encode()).hexdigest()[:16]
    tag = "" if family == "codec" else "_denoise"
    return Path(codes_dir) / f"{digest}_q{n_q}{tag}.npy"


CODEC_FAMILIES = (
    "codec",
    "codec+denoise",
)  # systems that run the codec (rows hold its fingerprint)
NOISE_KINDS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # kind -> spectral exponent


def noisy_mix(
    audio: np.ndarray, clip_id: str, snr_db: float, kind: str = "pink"
) -> tuple[np.ndarray, np.ndarray]:
    """``(noisy, clean)``: the clip with noise at ``snr_db`` and the clip itself, both scaled
    by the mix's peak when it exceeds 1 (as :class:`lit_codec.nn.NoiseMixer` does in
    training). The noise depends only on the clip's name: every run gets the same."""
    import torch

    from lit_codec.nn.augment import colored_noise, mix_at_snr

    seed = int(hashlib.sha1(clip_id.encode()).hexdigest()[:15], 16)
    generator = torch.Generator().manual_seed(seed)
    noise = colored_noise((len(audio),), NOISE_KINDS[kind], generator=generator)  # (T,)
    noisy, clean = mix_at_snr(torch.from_numpy(audio), noise, torch.tensor(float(snr_db)))
    return noisy.numpy(), clean.numpy()


def _process_clip(
    clip_id: str, audio: np.ndarray, systems: Sequence[System]
) -> list[dict[str, Any]]:
    """Run every pending system on one clip and score it: one row per system."""
    from lit_codec.baselines import opus_roundtrip

    codec = _STATE["codec"]
    config: _Config = _STATE["config"]
    rate = codec.sample_rate
    max_delay = int(round(config.max_delay_ms * rate / 1000))
    reference = audio  # what the systems' outputs are scored against
    if config.noise is not None:
        audio, reference = noisy_mix(audio, clip_id, config.noise["snr_db"], config.noise["kind"])
    rows = []
    for system in systems:
        started = time.perf_counter()
        row: dict[str, Any] = {"clip": clip_id, "label": system.label, "family": system.family}
        row["noise"] = config.noise
        if system.family in CODEC_FAMILIES:
            denoise = system.family == "codec+denoise"
            at_encode = denoise and codec.denoises_at == "encode"
            codes = codec.encode(audio, n_q=system.n_q, denoise=at_encode)  # (1, n_q, F)
            degraded = codec.decode(codes, denoise=denoise and not at_encode)
            degraded = degraded[0, 0, : len(audio)].float().cpu().numpy()  # (T,)
            stored = (
                codes[0]
                .cpu()
                .numpy()
                .astype(np.int16 if codec.codebook_size <= 32768 else np.int32)
            )
            path = _codes_path(config.codes_dir, clip_id, int(system.n_q), system.family)
            tmp = path.with_name(path.name + ".tmp.npy")
            np.save(tmp, stored)
            os.replace(tmp, path)
            row.update(
                n_q=system.n_q,
                fingerprint=config.fingerprint,
                actual_kbps=codec.quantizer.kbps(system.n_q),
            )
        elif system.family == "opus":
            out = opus_roundtrip(audio, rate, system.kbps, config.opus_backend)
            degraded, row["actual_kbps"] = out.audio, out.kbps
        elif system.family == "input":  # the (noisy) input itself, uncoded
            degraded = audio
        else:
            raise ValueError(f"unknown system family {system.family!r}")
        coded_seconds = time.perf_counter() - started
        ref, deg, delay = align(reference, degraded, max_delay)
        row.update(
            kbps=system.kbps,
            sample_rate=rate,
            seconds=len(audio) / rate,
            delay=delay,
            coding_seconds=round(coded_seconds, 4),
            scores=score_pair(ref, deg, rate, config.metrics),
        )
        rows.append(row)
    return rows


# --------------------------------------------------------------------------- resume
def _read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of ``clips.jsonl``; a partial last line (an interrupted write) is cut off."""
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        data = data[: data.rfind(b"\n") + 1]
        with open(path, "r+b") as f:
            f.truncate(len(data))
    rows = []
    for line in data.decode("utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


def _usable(
    row: dict[str, Any],
    metrics: Sequence[str],
    sample_rate: int,
    fingerprint: str,
    noise: dict[str, Any] | None = None,
) -> bool:
    if row.get("sample_rate") != sample_rate or not set(metrics) <= set(row.get("scores", {})):
        return False
    if row.get("noise") != noise:  # scored on other inputs
        return False
    return row.get("family") not in CODEC_FAMILIES or row.get("fingerprint") == fingerprint


# --------------------------------------------------------------------------- report
def _codebook_figures(
    codec: Any, codes_dir: Path, clip_ids: Sequence[str], n_q: int
) -> dict[str, Any] | None:
    import torch

    from lit_codec.metrics.codebook import CodebookStatistics

    stats = CodebookStatistics(codec.n_q, codec.codebook_size, codec.frame_rate)
    found = 0
    for clip_id in clip_ids:
        path = _codes_path(str(codes_dir), clip_id, n_q)
        if path.exists():
            stats.update(torch.from_numpy(np.load(path).astype(np.int64))[None])  # (1, n_q, F)
            found += 1
    if not found:
        return None
    result = stats.compute()
    return {
        "clips": found,
        "kbps": result.kbps,
        "entropy_kbps": result.entropy_kbps,
        "usage": [round(v, 4) for v in result.usage[:n_q]],
        "perplexity": [round(v, 2) for v in result.perplexity[:n_q]],
        "entropy_bits": [round(v, 3) for v in result.entropy[:n_q]],
    }


# --------------------------------------------------------------------------- command
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lit-codec evaluate",
        description="Rate–distortion report of a codec over a set of clips (see lit_codec/evaluate.py).",
    )
    p.add_argument(
        "--ckpt",
        default="speech16k",
        help="codec checkpoint (.ckpt), export (.safetensors), or a shipped codec's name "
        "(default: speech16k)",
    )
    p.add_argument(
        "--input",
        required=True,
        help="folder of audio files, prepared shard directory, or shard files/pattern",
    )
    p.add_argument("--output", required=True, help="report folder (an existing one is resumed)")
    p.add_argument(
        "--kbps",
        default=None,
        help="comma-separated bitrates (default: every bitrate of the codec)",
    )
    p.add_argument("--baseline", default="", help="comma-separated baselines to add: opus")
    p.add_argument(
        "--opus-kbps", default="6,8,12", help="bitrates of the Opus baseline (default: %(default)s)"
    )
    p.add_argument(
        "--metrics",
        default=None,
        help=f"comma-separated metrics from: {', '.join(METRICS)} (default: pesq,stoi,estoi,sisdr,mel and "
        "visqol_speech for codecs up to 16 kHz, visqol_audio above)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=min(4, os.cpu_count() or 1),
        help="worker processes (0: in this process)",
    )
    p.add_argument("--max-clips", type=int, default=None, help="evaluate at most this many clips")
    p.add_argument(
        "--split", default="test", help="split of a prepared shard directory (default: %(default)s)"
    )
    p.add_argument(
        "--max-delay-ms",
        type=float,
        default=20.0,
        help="largest constant delay removed before scoring",
    )
    p.add_argument(
        "--noise-snr",
        type=float,
        default=None,
        help="code noisy mixes at this SNR (dB) and score them against the clean clips",
    )
    p.add_argument(
        "--noise-kind",
        default="pink",
        choices=sorted(NOISE_KINDS),
        help="noise of --noise-snr (default: %(default)s)",
    )
    p.add_argument(
        "--denoise",
        action="store_true",
        help="also evaluate the codec with its denoising flag on (codec+denoise@...)",
    )
    p.add_argument("--device", default="cpu", help="device the codec runs on")
    add_threads_argument(p, per=" per process (this one and each worker)")
    return p


def _floats(text: str, flag: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{flag} takes comma-separated numbers, not {text!r}") from None


def _systems(
    codec: Any,
    kbps: list[float] | None,
    baselines: Sequence[str],
    opus_kbps: list[float],
    denoise: bool = False,
    noisy: bool = False,
) -> list[System]:
    systems: list[System] = []
    if noisy:
        systems.append(System("noisy-input", "input", 0.0))
    if denoise:
        codec.require_denoising()
    n_qs = range(1, codec.n_q + 1) if kbps is None else [codec.resolve_n_q(kbps=k) for k in kbps]
    for n_q in sorted(set(n_qs)):
        rate = codec.quantizer.kbps(n_q)
        systems.append(System(f"codec@{rate:g}kbps", "codec", rate, n_q))
        if denoise:
            systems.append(System(f"codec+denoise@{rate:g}kbps", "codec+denoise", rate, n_q))
    for name in baselines:
        if name != "opus":
            raise ValueError(f"unknown baseline {name!r} (available: opus)")
        systems += [System(f"opus@{k:g}kbps", "opus", k) for k in sorted(set(opus_kbps))]
    return systems


def _run(
    tasks: Iterator[tuple[Clip, list[System]]],
    config: _Config,
    codec: Any,
    workers: int,
    on_rows: Callable[[list[dict[str, Any]]], None],
    on_failure: Callable[[str, str], None],
) -> None:
    if workers <= 0:
        _init_worker(config, codec)
        for clip, systems in tasks:
            try:
                rows = _process_clip(clip.id, clip.audio, systems)
            except Exception as e:  # one failing clip does not end the evaluation
                on_failure(clip.id, f"{type(e).__name__}: {e}")
                continue
            on_rows(rows)
        return
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init_worker,
        initargs=(config,),
    )
    pending: dict[Future, str] = {}

    def collect(done: set[Future]) -> None:
        for future in done:
            clip_id = pending.pop(future)
            try:
                on_rows(future.result())
            except Exception as e:
                on_failure(clip_id, f"{type(e).__name__}: {e}")

    try:
        for clip, systems in tasks:
            while len(pending) >= 2 * workers:  # bound the clips held in memory
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                collect(done)
            pending[pool.submit(_process_clip, clip.id, clip.audio, systems)] = clip.id
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            collect(done)
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()


def evaluate_main(argv: list[str]) -> int:
    """Entry point of ``lit-codec evaluate``; returns the exit status.

    0: every clip evaluated; 1: the report was written but some clips failed or could not
    be read; 2: nothing could be done (bad arguments, missing tools); 130: interrupted (run
    the same command again to resume).
    """
    args = _parser().parse_args(argv)
    try:
        return _evaluate(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"lit-codec evaluate: {e}", file=sys.stderr)
        return 2


def _evaluate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from lit_codec.baselines import opus_backend
    from lit_codec.codec import Codec

    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "the rate–distortion plot needs matplotlib: pip install matplotlib"
        ) from None
    threads = set_threads(args.threads)
    codec = Codec.from_checkpoint(args.ckpt, map_location=args.device)
    rate = codec.sample_rate
    default_metrics = [
        "pesq",
        "stoi",
        "estoi",
        "sisdr",
        "mel",
        "visqol_speech" if rate <= 16000 else "visqol_audio",
    ]
    metrics = check_metric_names(
        [m.strip() for m in args.metrics.split(",") if m.strip()]
        if args.metrics
        else default_metrics
    )
    baselines = [b.strip() for b in args.baseline.split(",") if b.strip()]
    kbps = _floats(args.kbps, "--kbps") if args.kbps else None
    noise = (
        None
        if args.noise_snr is None
        else {"snr_db": float(args.noise_snr), "kind": args.noise_kind}
    )
    systems = _systems(
        codec,
        kbps,
        baselines,
        _floats(args.opus_kbps, "--opus-kbps"),
        denoise=args.denoise,
        noisy=noise is not None,
    )
    backend = opus_backend() if "opus" in baselines else None

    out = Path(args.output)
    codes_dir = out / "codes"
    codes_dir.mkdir(parents=True, exist_ok=True)
    jsonl = out / "clips.jsonl"
    previous = _read_rows(jsonl)
    other = {r.get("fingerprint") for r in previous if r.get("family") in CODEC_FAMILIES} - {
        codec.fingerprint
    }
    if other:
        raise ValueError(
            f"{jsonl} holds results of another codec ({', '.join(sorted(map(str, other)))}; this one is "
            f"{codec.fingerprint}): choose another --output or delete that folder"
        )
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for row in previous:
        if _usable(row, metrics, rate, codec.fingerprint, noise):
            rows[(row["clip"], row["label"])] = row

    config = _Config(
        ckpt=str(args.ckpt),
        device=args.device,
        metrics=metrics,
        max_delay_ms=args.max_delay_ms,
        codes_dir=str(codes_dir),
        opus_backend=backend,
        sample_rate=rate,
        fingerprint=codec.fingerprint,
        noise=noise,
        threads=threads,
    )
    unreadable: list[dict[str, str]] = []
    failures: list[dict[str, str]] = []
    clip_ids: list[str] = []
    clip_seconds = 0.0
    todo_pairs = 0
    total = count_clips(args.input, args.split, args.max_clips)
    bar = tqdm(total=total, unit="clip", desc="evaluate", file=sys.stderr, disable=None)

    def tasks() -> Iterator[tuple[Clip, list[System]]]:
        nonlocal clip_seconds, todo_pairs
        clips = iter_clips(
            args.input,
            rate,
            args.split,
            args.max_clips,
            lambda name, reason: unreadable.append({"clip": name, "reason": reason}),
        )
        for clip in clips:
            clip_ids.append(clip.id)
            clip_seconds += len(clip.audio) / rate
            pending = [s for s in systems if (clip.id, s.label) not in rows]
            if pending:
                todo_pairs += len(pending)
                yield clip, pending
            else:
                bar.update(1)

    def on_rows(new_rows: list[dict[str, Any]]) -> None:
        with open(jsonl, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(r) + "\n" for r in new_rows))
        for r in new_rows:
            rows[(r["clip"], r["label"])] = r
        bar.update(1)

    def on_failure(clip_id: str, reason: str) -> None:
        failures.append({"clip": clip_id, "reason": reason})
        bar.update(1)

    try:
        _run(tasks(), config, codec, args.workers, on_rows, on_failure)
    except KeyboardInterrupt:
        bar.close()
        print(
            f"lit-codec evaluate: interrupted; run the same command again to resume from {jsonl}",
            file=sys.stderr,
        )
        return 130
    bar.close()
    for item in unreadable + failures:
        print(f"lit-codec evaluate: {item['clip']}: {item['reason']}", file=sys.stderr)
    if not clip_ids:
        raise ValueError(f"--input {args.input}: no clip could be read")

    codebook = {
        s.label: _codebook_figures(codec, codes_dir, clip_ids, s.n_q)
        for s in systems
        if s.family == "codec"
    }
    header = {
        "codec": {
            "checkpoint": str(args.ckpt),
            "fingerprint": codec.fingerprint,
            "sample_rate": rate,
            "frame_rate": codec.frame_rate,
            "n_q": codec.n_q,
            "codebook_size": codec.codebook_size,
        },
        "input": str(args.input),
        "noise": noise,
        "metrics": list(metrics),
        "max_delay_ms": args.max_delay_ms,
        "baselines": {"opus": backend} if backend else {},
        "clips": {
            "count": len(clip_ids),
            "seconds": clip_seconds,
            "unreadable": unreadable,
            "failed": failures,
        },
    }
    report = build_report(rows, clip_ids, systems, metrics, header, codebook)
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    markdown = report_markdown(report)
    (out / "report.md").write_text(markdown, encoding="utf-8")
    plot_rate_distortion(report, out / "rate_distortion.png")
    done = len(clip_ids) * len(systems) - todo_pairs
    print(markdown)
    print(
        f"{len(clip_ids)} clips x {len(systems)} systems: {todo_pairs} evaluated now, {done} taken from {jsonl}; "
        f"report in {out}/report.json, report.md, rate_distortion.png"
    )
    return 1 if unreadable or failures else 0
