"""Raw audio → WebDataset shards (the engine behind ``data_prep/make_audio_shards.py``).

For every input file, in worker processes: decode (:mod:`lit_codec.data.audio_io`),
reject NaN/inf, mix to mono, resample with soxr, optionally normalise loudness,
cut long files into segments of at most ``max_seconds`` at quiet points, drop
silent or too-short segments, encode each segment as FLAC. In the parent:
assign every file (or speaker) to train/valid/test by a hash, and write
samples ``{key}.flac`` + ``{key}.json`` into size-bounded shards
``{split}-{NNNNNN}.tar``.

Resumable: a shard is written under a temporary name, its ledger
(``.progress/{shard}.json``: the position in the input list after it and the
inputs it reported) is written next, then the shard is renamed. A re-run with
the same settings and inputs skips finished shards and produces byte-identical
output; nothing partial ever carries a final name.

Nothing about a bad file stops the run: every skipped input and dropped
segment is listed with its cause in ``report.json``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import re
import shutil
import sys
import tarfile
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit_codec import __version__
from lit_codec.data.audio_io import AudioError, encode_flac, read_audio, resample, to_mono
from lit_codec.data.corpus import AudioInput, discover
from lit_codec.data.loudness import normalize_loudness

__all__ = ["PrepareResult", "PrepareSettings", "plan_segments", "prepare_shards"]

SPLITS = ("train", "valid", "test")
INDEX_FORMAT = "lit-codec/audio-shards"
INDEX_VERSION = 1
FRAME_SECONDS = 0.02  # analysis frame for silence and cut points


@dataclass(frozen=True)
class PrepareSettings:
    """What the shards contain; stored in index.json. A resumed run must use the same."""

    sample_rate: int = 16000
    bit_depth: int = 16
    loudness_lufs: float | None = None
    max_seconds: float = 30.0
    min_seconds: float = 0.5
    silence_dbfs: float = -60.0
    valid_fraction: float = 0.02
    test_fraction: float = 0.02
    split_by: str = "auto"  # "auto" | "speaker" | "file"
    all_to: str | None = None  # put every input into this one split
    shard_max_mb: float = 256.0
    shard_max_samples: int = 10000
    salt: str = "lit-codec"
    use_ffmpeg: bool = True

    def __post_init__(self):
        if self.bit_depth not in (16, 24):
            raise ValueError(f"bit_depth must be 16 or 24, not {self.bit_depth}")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise ValueError("need 0 < min_seconds <= max_seconds")
        if self.split_by not in ("auto", "speaker", "file"):
            raise ValueError(f"split_by must be auto, speaker or file, not {self.split_by!r}")
        if self.all_to is not None and self.all_to not in SPLITS:
            raise ValueError(f"all_to must be one of {SPLITS}")
        if (
            self.valid_fraction < 0
            or self.test_fraction < 0
            or self.valid_fraction + self.test_fraction >= 1
        ):
            raise ValueError("valid and test fractions must be >= 0 and sum to less than 1")


@dataclass
class PrepareResult:
    """What a run produced (also written to index.json and report.json)."""

    output: Path
    files_found: int
    files_used: int
    files_skipped: int
    segments_dropped: int
    splits: dict[str, dict[str, Any]]
    split_by: str
    skipped: list[dict[str, Any]] = field(default_factory=list)

    def summary(self) -> str:
        hours = ", ".join(  # every split, an empty one as 0.000 h
            f"{s} {self.splits.get(s, {}).get('hours', 0.0):.3f} h" for s in SPLITS
        )
        return (
            f"{self.files_used} of {self.files_found} files went in, {self.files_skipped} skipped "
            f"({self.segments_dropped} segments dropped); hours per split: {hours}; "
            f"see {self.output / 'report.json'}"
        )


# --------------------------------------------------------------------------- workers


@dataclass
class _Event:
    """A sample to write, or a report entry, at one position (input, segment) of the stream."""

    segment: int
    key: str | None = None
    flac: bytes | None = None
    meta: dict[str, Any] | None = None
    report: dict[str, Any] | None = None


@dataclass
class _FileResult:
    index: int
    events: list[_Event]


def plan_segments(
    audio: np.ndarray, sample_rate: int, max_seconds: float, min_seconds: float
) -> list[tuple[int, int]]:
    """Cut points for a mono signal: pieces of at most ``max_seconds``, cut where it is quietest.

    Each cut lies in the second half of the allowed window, at the frame of least
    energy, and leaves at least ``min_seconds`` for what follows when it can.
    """
    total = len(audio)
    max_n = int(round(max_seconds * sample_rate))
    if total <= max_n:
        return [(0, total)]
    frame = max(1, int(FRAME_SECONDS * sample_rate))
    energy = _frame_energy(audio, frame)
    min_n = int(round(min_seconds * sample_rate))
    pieces, start = [], 0
    while total - start > max_n:
        hi = min(start + max_n, total - min_n)
        lo = start + max(min_n, max_n // 2)
        if hi <= lo:
            cut = start + max_n
        else:
            f_lo, f_hi = -(-lo // frame), hi // frame
            if f_hi <= f_lo:
                cut = hi
            else:
                window = energy[f_lo:f_hi]
                best = f_lo + int(np.flatnonzero(window == window.min())[-1])
                cut = min(max(best * frame + frame // 2, lo), hi)
        pieces.append((start, cut))
        start = cut
    pieces.append((start, total))
    return pieces


def _frame_energy(audio: np.ndarray, frame: int) -> np.ndarray:
    n = len(audio) // frame
    if n == 0:
        return np.array([np.mean(audio.astype(np.float64) ** 2)])
    return np.mean(audio[: n * frame].astype(np.float64).reshape(n, frame) ** 2, axis=1)


def _loudest_frame_dbfs(audio: np.ndarray, sample_rate: int) -> float:
    energy = _frame_energy(audio, max(1, int(FRAME_SECONDS * sample_rate)))
    peak = float(energy.max()) if energy.size else 0.0
    return 10 * math.log10(peak) if peak > 0 else -math.inf


def _key(name: str, segment: int) -> str:
    stem = re.sub(r"\.[A-Za-z0-9]{1,5}$", "", name)
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", stem).strip("_")[-60:].lstrip("_-") or "audio"
    digest = hashlib.sha1(name.encode()).hexdigest()[:10]
    return f"{slug}_{digest}_{segment:04d}"


def _entry(
    item: AudioInput, reason: str, detail: str = "", stage: str = "read", **more
) -> dict[str, Any]:
    return {"path": item.path, "reason": reason, "detail": detail, "stage": stage, **more}


def _process(job: tuple[int, AudioInput, PrepareSettings, str, int]) -> _FileResult:
    index, item, settings, split, first_segment = job
    try:
        return _FileResult(index, _process_file(item, settings, split, first_segment))
    except AudioError as e:
        return _FileResult(index, [_Event(-1, report=_entry(item, e.reason, e.detail))])
    except Exception as e:  # a decoder bug must not stop the run either
        return _FileResult(
            index, [_Event(-1, report=_entry(item, "undecodable", f"{type(e).__name__}: {e}"))]
        )


def _process_file(
    item: AudioInput, s: PrepareSettings, split: str, first_segment: int
) -> list[_Event]:
    decoded = read_audio(item.path, use_ffmpeg=s.use_ffmpeg)
    if not np.isfinite(decoded.samples).all():
        bad = int((~np.isfinite(decoded.samples)).sum())
        return [
            _Event(-1, report=_entry(item, "NaN or infinite samples", f"{bad} non-finite values"))
        ]
    audio = resample(to_mono(decoded.samples), decoded.sample_rate, s.sample_rate)
    seconds = len(audio) / s.sample_rate
    if seconds < s.min_seconds:
        return [
            _Event(-1, report=_entry(item, "too short", f"{seconds:.3f} s < {s.min_seconds} s"))
        ]
    loudest = _loudest_frame_dbfs(audio, s.sample_rate)
    if loudest < s.silence_dbfs:
        return [
            _Event(
                -1,
                report=_entry(
                    item, "silent", f"loudest frame {loudest:.1f} dBFS < {s.silence_dbfs} dBFS"
                ),
            )
        ]
    gain_db = 0.0
    if s.loudness_lufs is not None:
        audio, gain_db = normalize_loudness(audio, s.sample_rate, s.loudness_lufs)
    peak = float(np.abs(audio).max())
    if peak > 1.0:  # float sources or resampling overshoot: scale rather than clip
        audio = audio * (0.999 / peak)
        gain_db += 20 * math.log10(0.999 / peak)
    pieces = plan_segments(audio, s.sample_rate, s.max_seconds, s.min_seconds)
    events = []
    for j, (a, b) in enumerate(pieces):
        if j < first_segment:
            continue
        piece = audio[a:b]
        where = {"segment": j, "offset": round(a / s.sample_rate, 4)}
        if (b - a) < s.min_seconds * s.sample_rate:
            events.append(
                _Event(
                    j,
                    report=_entry(
                        item,
                        "too short",
                        f"segment of {(b - a) / s.sample_rate:.3f} s",
                        "segment",
                        **where,
                    ),
                )
            )
            continue
        level = _loudest_frame_dbfs(piece, s.sample_rate)
        if level < s.silence_dbfs:
            events.append(
                _Event(
                    j,
                    report=_entry(
                        item,
                        "silent",
                        f"segment's loudest frame {level:.1f} dBFS",
                        "segment",
                        **where,
                    ),
                )
            )
            continue
        key = _key(item.name, j)
        meta: dict[str, Any] = {
            "key": key,
            "sample_rate": s.sample_rate,
            "num_samples": int(b - a),
            "duration": round((b - a) / s.sample_rate, 6),
            "source": item.path,
            "source_name": item.name,
            "segment": j,
            "num_segments": len(pieces),
            "offset": round(a / s.sample_rate, 6),
            "offset_samples": int(a),
            "orig_sample_rate": decoded.sample_rate,
            "orig_channels": decoded.channels,
            "orig_format": decoded.format,
            "split": split,
            "gain_db": round(gain_db, 3),
        }
        if item.speaker is not None:
            meta["speaker"] = item.speaker
        if item.language is not None:
            meta["language"] = item.language
        if item.text is not None:
            # a transcript belongs to the whole file, not to one piece of it
            meta["text" if len(pieces) == 1 else "source_text"] = item.text
        if item.extra:
            meta["extra"] = item.extra
        events.append(
            _Event(j, key=key, flac=encode_flac(piece, s.sample_rate, s.bit_depth), meta=meta)
        )
    return events


def _quiet_worker() -> None:
    """Worker set-up: die with the parent (a killed run leaves no orphans) and silence
    C-level decoder chatter (mpg123 warnings)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:
            ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)


# --------------------------------------------------------------------------- splits


def _unit_hash(salt: str, unit: str) -> float:
    return int(hashlib.sha1(f"{salt}:{unit}".encode()).hexdigest()[:12], 16) / float(1 << 48)


def assign_splits(inputs: list[AudioInput], s: PrepareSettings) -> tuple[list[str], str]:
    """Deterministic split per input: by speaker where known (and plenty), else by file."""
    if s.all_to is not None:
        return [s.all_to] * len(inputs), "none"
    speakers = {i.speaker for i in inputs if i.speaker}
    by = s.split_by
    if by == "auto":
        by = (
            "speaker"
            if inputs and all(i.speaker for i in inputs) and len(speakers) >= 10
            else "file"
        )
    units = sorted({(i.speaker or i.name) if by == "speaker" else i.name for i in inputs})
    hashes = {u: _unit_hash(s.salt, u) for u in units}
    unit_split = {}
    for u in units:
        h = hashes[u]
        unit_split[u] = (
            "test"
            if h < s.test_fraction
            else "valid"
            if h < s.test_fraction + s.valid_fraction
            else "train"
        )
    # small corpora: make sure each requested split gets at least one unit
    for split, fraction in (("valid", s.valid_fraction), ("test", s.test_fraction)):
        if fraction > 0 and len(units) >= 3 and split not in unit_split.values():
            candidates = sorted((u for u in units if unit_split[u] == "train"), key=hashes.get)
            if len(candidates) > 1:
                unit_split[candidates[0]] = split
    splits = [unit_split[(i.speaker or i.name) if by == "speaker" else i.name] for i in inputs]
    return splits, by


# --------------------------------------------------------------------------- writing


def _atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1, sort_keys=True, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _tar_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible shards
    info.mode = 0o644
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class _SplitWriter:
    """Writes one split's shards in order, each with its ledger."""

    def __init__(
        self, out: Path, split: str, s: PrepareSettings, first_shard: int, ledgers: list[dict]
    ):
        self.out, self.split, self.s = out, split, s
        self.shard = first_shard
        self.ledgers = ledgers  # finished shards, from an earlier run or this one
        self.pending_report: list[dict] = []
        self.tar: tarfile.TarFile | None = None
        self.count = self.bytes = 0
        self.seconds = 0.0
        self.next_position: list[int] | None = None

    @property
    def name(self) -> str:
        return f"{self.split}-{self.shard:06d}.tar"

    def add(self, position: tuple[int, int], key: str, flac: bytes, meta: dict) -> None:
        payload = json.dumps(meta, sort_keys=True, ensure_ascii=False).encode()
        size = len(flac) + len(payload) + 2048
        if self.tar is not None and (
            self.count >= self.s.shard_max_samples or self.bytes + size > self.s.shard_max_mb * 1e6
        ):
            self.close()
        if self.tar is None:
            self.tar = tarfile.open(
                self.out / (self.name + ".tmp"), "w", format=tarfile.USTAR_FORMAT
            )
        _tar_member(self.tar, f"{key}.flac", flac)
        _tar_member(self.tar, f"{key}.json", payload)
        self.count += 1
        self.bytes += size
        self.seconds += meta["duration"]
        self.next_position = [position[0], position[1] + 1]

    def hours(self) -> float:
        return (self.seconds + sum(x["seconds"] for x in self.ledgers)) / 3600

    def report(self, entry: dict) -> None:
        self.pending_report.append(entry)

    def close(self) -> None:
        if self.tar is None:
            return
        self.tar.close()
        tmp = self.out / (self.name + ".tmp")
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        ledger = {
            "shard": self.name,
            "samples": self.count,
            "seconds": round(self.seconds, 6),
            "next": self.next_position,
            "report": self.pending_report,
        }
        _atomic_write_json(self.out / ".progress" / (self.name + ".json"), ledger)
        os.replace(tmp, self.out / self.name)
        self.ledgers.append(ledger)
        self.tar, self.count, self.bytes, self.seconds = None, 0, 0, 0.0
        self.pending_report = []
        self.shard += 1


def _fingerprint(inputs: list[AudioInput], s: PrepareSettings) -> str:
    h = hashlib.sha256(json.dumps(asdict(s), sort_keys=True).encode())
    for item in inputs:
        try:
            st = os.stat(item.path)
            stamp = f"{st.st_size}:{st.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        h.update(f"{item.name}\0{item.path}\0{stamp}\n".encode())
    return h.hexdigest()


def _resume_state(out: Path, fingerprint: str, overwrite: bool) -> dict[str, list[dict]]:
    """Finished shards per split from an earlier run with the same fingerprint."""
    progress = out / ".progress"
    stamp = progress / "fingerprint.json"
    if overwrite and out.exists():
        for p in (
            list(out.glob("*-*.tar"))
            + list(out.glob("*.tar.tmp"))
            + [out / "index.json", out / "report.json"]
        ):
            if p.exists():
                p.unlink()
        shutil.rmtree(progress, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if stamp.exists():
        previous = json.loads(stamp.read_text())["fingerprint"]
        if previous != fingerprint:
            raise RuntimeError(
                f"{out} holds shards made from other inputs or settings; "
                "use --overwrite to replace them or choose another --output"
            )
    elif any(out.glob("*-*.tar")):
        raise RuntimeError(
            f"{out} already holds shards not made by this tool's resumable run; use --overwrite"
        )
    progress.mkdir(exist_ok=True)
    _atomic_write_json(stamp, {"fingerprint": fingerprint})
    for tmp in out.glob("*.tmp"):
        tmp.unlink()
    finished: dict[str, list[dict]] = {}
    for split in SPLITS:
        ledgers = []
        n = 0
        while True:
            name = f"{split}-{n:06d}.tar"
            ledger_path = progress / (name + ".json")
            if not ((out / name).exists() and ledger_path.exists()):
                break
            ledgers.append(json.loads(ledger_path.read_text()))
            n += 1
        # shards after the first gap were never finished as a sequence: redo them
        for stale in out.glob(f"{split}-*.tar"):
            if int(stale.stem.split("-")[1]) >= n:
                stale.unlink()
        finished[split] = ledgers
    return finished


def prepare_shards(
    inputs: list[str | os.PathLike],
    output: str | os.PathLike,
    settings: PrepareSettings = PrepareSettings(),
    layout: str = "auto",
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
    vctk_mic: str = "mic1",
) -> PrepareResult:
    """Prepare shards from ``inputs`` into ``output``; see the module docstring."""
    out = Path(output)
    found = discover(list(inputs), layout=layout, vctk_mic=vctk_mic)
    items = found.inputs
    splits, split_by = assign_splits(items, settings)
    finished = _resume_state(out, _fingerprint(items, settings), overwrite)
    writers = {
        sp: _SplitWriter(out, sp, settings, len(finished[sp]), finished[sp]) for sp in SPLITS
    }
    cursor = {sp: tuple(finished[sp][-1]["next"]) if finished[sp] else (0, 0) for sp in SPLITS}
    jobs = []
    for i, (item, sp) in enumerate(zip(items, splits)):
        ci, cj = cursor[sp]
        if i >= ci:
            jobs.append((i, item, settings, sp, cj if i == ci else 0))
    bar = _progress_bar(len(items), len(items) - len(jobs), progress)
    for result in _run(jobs, workers):
        sp = splits[result.index]
        writer = writers[sp]
        for ev in result.events:
            if ev.report is not None:
                writer.report(ev.report)
            else:
                writer.add((result.index, ev.segment), ev.key, ev.flac, ev.meta)
        bar.update(1)
        bar.set_postfix_str(
            " ".join(f"{sp}={w.hours():.2f}h" for sp, w in writers.items()), refresh=False
        )  # shown at the bar's next refresh, not once per file
    bar.close()
    tail_report = []
    for w in writers.values():
        if w.tar is not None:
            w.close()
        tail_report.extend(w.pending_report)
    return _finish(out, found, items, settings, split_by, writers, tail_report)


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        unit="file",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        # a log file or pipe gets a line every 10 s, a terminal a live bar
        mininterval=0.1 if sys.stderr.isatty() else 10.0,
    )


def _run(jobs: list, workers: int | None):
    """Process jobs in worker processes, yielding results in job order.

    A worker that dies (a decoder crashing on a malformed file) breaks the pool;
    the unfinished jobs are then retried one per fresh process, so only the file
    that crashes is lost, and it is reported.
    """
    workers = max(1, workers or os.cpu_count() or 1)
    window = 4 * workers
    queue = deque(jobs)
    while queue:
        pending: deque = deque()
        with ProcessPoolExecutor(workers, initializer=_quiet_worker) as pool:
            try:
                while queue or pending:
                    while queue and len(pending) < window:
                        job = queue.popleft()
                        pending.append((job, pool.submit(_process, job)))
                    job, future = pending[0]
                    result = future.result()
                    pending.popleft()
                    yield result
            except BrokenProcessPool:
                retry = [job for job, _ in pending]
                queue.extendleft(reversed(retry[1:]))
                yield _run_isolated(retry[0])


def _run_isolated(job) -> _FileResult:
    with ProcessPoolExecutor(1, initializer=_quiet_worker) as pool:
        try:
            return pool.submit(_process, job).result()
        except BrokenProcessPool:
            return _FileResult(
                job[0],
                [
                    _Event(
                        -1, report=_entry(job[1], "undecodable", "the decoder crashed on this file")
                    )
                ],
            )


def _finish(out, found, items, settings, split_by, writers, tail_report) -> PrepareResult:
    report_entries = list(found.skipped)
    splits_info: dict[str, dict[str, Any]] = {}
    for sp, w in writers.items():
        for ledger in w.ledgers:
            report_entries.extend(ledger["report"])
        if w.ledgers:
            splits_info[sp] = {
                "shards": [x["shard"] for x in w.ledgers],
                "num_samples": sum(x["samples"] for x in w.ledgers),
                "seconds": round(sum(x["seconds"] for x in w.ledgers), 3),
                "hours": round(sum(x["seconds"] for x in w.ledgers) / 3600, 6),
            }
    report_entries.extend(tail_report)
    file_level = [e for e in report_entries if e.get("stage") != "segment"]
    segment_level = [e for e in report_entries if e.get("stage") == "segment"]
    skipped_paths = {e["path"] for e in file_level}
    used = sum(1 for item in items if item.path not in skipped_paths)
    by_reason: dict[str, int] = {}
    for e in report_entries:
        by_reason[e["reason"]] = by_reason.get(e["reason"], 0) + 1
    result = PrepareResult(
        output=out,
        files_found=len(items) + sum(1 for e in found.skipped),
        files_used=used,
        files_skipped=len(file_level),
        segments_dropped=len(segment_level),
        splits=splits_info,
        split_by=split_by,
        skipped=file_level,
    )
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "created_by": f"lit-codec {__version__}",
        "sample_rate": settings.sample_rate,
        "bit_depth": settings.bit_depth,
        "split_by": split_by,
        "layouts": found.layouts,
        "splits": splits_info,
        "settings": asdict(settings),
        "files": {"found": result.files_found, "used": used, "skipped": result.files_skipped},
    }
    report = {
        "files_found": result.files_found,
        "files_used": used,
        "files_skipped": result.files_skipped,
        "segments_dropped": result.segments_dropped,
        "by_reason": dict(sorted(by_reason.items())),
        "skipped_files": sorted(file_level, key=lambda e: e["path"]),
        "dropped_segments": sorted(segment_level, key=lambda e: (e["path"], e.get("segment", 0))),
    }
    _atomic_write_json(out / "report.json", report)
    _atomic_write_json(out / "index.json", index)
    return result
