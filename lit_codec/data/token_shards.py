"""Audio shards + a codec -> token shards for the codec LM (the engine of
``data_prep/make_token_shards.py``).

Reads an audio-shard directory (``data_prep/make_audio_shards.py``: ``index.json`` and
``{split}-NNNNNN.tar`` of ``{key}.flac`` + ``{key}.json``) and writes, per split of its
index, WebDataset shards of::

    {key}.codes.npy          int16 (frames, n_q), frames = ceil(samples / hop)
    {key}.<field>.npy        each field the sample's tasks read (the templates' ``source``:
                             noisy_codes, mixture_codes, reverberant_codes, prompt_codes,
                             masked_codes, phones, semantic, midi, text)
    {key}.json               key, split, speaker, language, text, duration, frames, the
                             tasks it serves, the fields, what was drawn for its pairs

plus ``index.json`` (the vocabulary schema built with
:func:`~lit_codec.lm.templates.vocabulary_for` from the tasks' templates, the codec's
:class:`~lit_codec.lm.vocab.CodecInfo` and the condition tokenizers' sizes and metadata,
its hash, the splits with their shards and counts, the settings) and ``report.json`` (every
sample, and every task of a sample, left out, with its cause).

How: one pass over the input shards catalogues every sample (where its members lie, its
speaker: :class:`~lit_codec.data.shard_catalog.ShardCatalog`), never holding audio. The
samples of each split, in input order, are cut into chunks of ``shard_max_samples``; chunk
``n`` becomes ``{split}-{n:06d}.tar``. Chunks are independent jobs for ``workers``
processes; each writes its shard under a temporary name, then its ledger
(``.progress/{shard}.json``: counts and report entries), then renames the shard. A rerun of
the same command skips the chunks whose shard and ledger exist and writes the rest, so a
run killed at any point resumes to byte-identical output. Every random draw is seeded by
``(seed, sample key)`` (:mod:`lit_codec.data.pairs`), samples are encoded in groups fixed by
the input order, tar members carry fixed metadata (mtime 0, uid/gid 0, member order fixed)
and every worker runs torch with ``threads`` threads: the bytes do not depend on the number
of workers or on which chunk finished first.

Bad input never stops a run, and good samples are never lost: a sample a task cannot use
(a TTS sample without transcript, an unsupported language, an unreadable MIDI file, no
other utterance of the speaker for a prompt) still serves the other tasks; each such case
is in ``report.json``. What would make every sample wrong is refused before any work: a
codec whose sample rate is not the shards', an unknown task, a field nobody can make.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from lit_codec import __version__
from lit_codec.data.pairs import NoiseBank, PairSettings
from lit_codec.data.prepare import _atomic_write_json, _tar_member
from lit_codec.data.shard_catalog import ShardCatalog
from lit_codec.data.shards import load_index
from lit_codec.data.token_samples import FIELDS, TOKEN_FIELDS, ConditionTokenizers, SampleBuilder
from lit_codec.lm.templates import TaskTemplate, load_templates, vocabulary_for
from lit_codec.lm.vocab import CODEC, Vocabulary

__all__ = ["TokenShardResult", "TokenShardSettings", "make_token_shards"]

INDEX_FORMAT = "lit-codec/token-shards"
INDEX_VERSION = 1
MIN_GROUP_SECONDS = 60.0  # audio per codec group: enough clips to fill the batches


@dataclass(frozen=True)
class TokenShardSettings:
    """What to make and how to run.

    Args:
        input: the audio-shard directory (with ``index.json``).
        output: the token-shard directory to write.
        codec: a checkpoint, an export, a shipped codec's name, or a :class:`Codec`.
        tasks: task names of the templates (``se``, ``tse``, ``dereverb``, ``tts``, ...).
        templates: a tasks YAML; default: ``recipes/lm/tasks.yaml``.
        pairs: the draws of pairs (seed, SNR, SIR, RT60, ...).
        noise: a folder of noise recordings or noise audio shards; default: built-in kinds.
        language: language of samples whose metadata names none.
        kmeans: the k-means file of semantic tokens (``vc``).
        bpe: a sentencepiece model for the ``text`` field; default: UTF-8 bytes.
        n_q: codebooks kept; default: all.
        vocabulary: grow this vocabulary instead of building one from the tasks (fine-tuning
            a trained LM to new tasks): a ``CodecLM`` checkpoint, a vocabulary JSON, or a
            token-shard directory; what the tasks need and it lacks is appended, no id moves.
        max_batch_seconds: padded audio per codec call; default: the codec tokenizer's
            (8 s on a CPU, 64 s on a GPU). The codes of a non-causal codec depend on it.
        shard_max_samples: samples per output shard (at most).
        device: where the codec runs (``cpu``, ``cuda``); CPU and GPU may give codes that
            differ where float rounding moves a nearest code.
        workers: processes; 1 runs in this process. Default: one per CPU core on a CPU,
            1 on a GPU.
        threads: torch threads of each worker (the codes do not depend on ``workers``;
            keep ``threads`` fixed across resumed runs).
        overwrite: delete an earlier run's output made with other settings.
        progress: show a progress bar.
        max_shards: write at most this many new shards, then stop (no index.json); a rerun
            goes on. None: finish.
    """

    input: str
    output: str
    codec: Any = "speech16k"
    tasks: tuple[str, ...] = ("se",)
    templates: str | None = None
    pairs: PairSettings = PairSettings()
    noise: str | None = None
    language: str | None = None
    kmeans: str | None = None
    bpe: str | None = None
    n_q: int | None = None
    vocabulary: str | None = None
    max_batch_seconds: float | None = None
    shard_max_samples: int = 1000
    device: str = "cpu"
    workers: int | None = None
    threads: int = 1
    overwrite: bool = False
    progress: bool = True
    max_shards: int | None = None

    def __post_init__(self) -> None:
        if self.shard_max_samples < 1 or (self.workers or 1) < 1 or self.threads < 1:
            raise ValueError("shard_max_samples, workers and threads must be at least 1")
        tasks = self.tasks.split(",") if isinstance(self.tasks, str) else self.tasks
        object.__setattr__(self, "tasks", tuple(t.strip() for t in tasks if t.strip()))
        if not self.tasks:
            raise ValueError("no tasks given")


@dataclass
class TokenShardResult:
    """What a run produced (also in index.json and report.json).

    Args:
        output: the output directory.
        complete: False when ``max_shards`` stopped the run early (no index.json then).
        samples_in: samples in the input shards.
        samples_out: samples written (serving at least one task).
        splits: split -> shards, samples, seconds, frames, samples per task.
        served: task -> samples that serve it.
        skipped: the report entries (a sample, or a task of a sample, left out, and why).
        vocab_hash: hash of the vocabulary schema.
    """

    output: Path
    complete: bool
    samples_in: int
    samples_out: int
    splits: dict[str, dict[str, Any]]
    served: dict[str, int]
    skipped: list[dict[str, Any]] = field(default_factory=list)
    vocab_hash: str = ""

    def summary(self) -> str:
        if not self.complete:
            return (
                f"stopped early (max_shards); run the same command again to go on in {self.output}"
            )
        dropped = self.samples_in - self.samples_out
        tasks = ", ".join(f"{t} {n}" for t, n in self.served.items())
        return (
            f"{self.samples_out} of {self.samples_in} samples written ({dropped} left out); "
            f"samples per task: {tasks}; vocabulary {self.vocab_hash}; "
            f"see {self.output / 'report.json'}"
        )


# --------------------------------------------------------------------------- the run
def make_token_shards(settings: TokenShardSettings) -> TokenShardResult:
    """Make token shards; see the module docstring.

    Raises:
        ValueError: the codec's sample rate is not the shards' (names both), an unknown
            task, a template field no builder makes, missing tokenizer files.
        FileNotFoundError: no input index, a missing shard, codec or noise folder.
        RuntimeError: the output holds a run with other settings (use ``overwrite``).
    """
    s = settings
    if s.workers is None:
        workers = (os.cpu_count() or 1) if _device_type(s.device) == "cpu" else 1
        s = replace(s, workers=workers)
    index = load_index(s.input)
    templates = _select_templates(s)
    codec = _codec_tokenizer(s, "cpu" if s.workers > 1 else s.device)
    if index.get("sample_rate") != codec.sample_rate:
        raise ValueError(
            f"the codec codes {codec.sample_rate} Hz audio but the shards in {s.input} hold "
            f"{index.get('sample_rate')} Hz audio: make audio shards at {codec.sample_rate} Hz "
            f"(make_audio_shards.py --sample-rate {codec.sample_rate}) or use a codec for "
            f"{index.get('sample_rate')} Hz"
        )
    conditions = ConditionTokenizers.build(
        _tokenizers(templates), codec.frame_rate, s.kmeans, s.bpe
    )
    base = read_vocabulary(s.vocabulary) if s.vocabulary else None
    vocab = _vocabulary(templates, codec, conditions, base)
    noise = (
        NoiseBank.from_path(s.noise, codec.sample_rate)
        if s.noise and _uses(templates, "noisy_codes")
        else None
    )
    catalog = ShardCatalog.build(s.input)  # the one pass over the input
    content = _content(s, index, templates, codec, vocab, noise)
    out = Path(s.output)
    finished = _resume_state(out, content, s.overwrite)
    jobs, all_jobs = [], []
    for split in catalog.splits():  # train, valid, test, then any other, as catalogued
        ids = catalog.ids(split)
        for n, start in enumerate(range(0, len(ids), s.shard_max_samples)):
            job = (f"{split}-{n:06d}.tar", split, ids[start : start + s.shard_max_samples])
            all_jobs.append(job)
            if job[0] not in finished:
                jobs.append(job)
    if s.max_shards is not None:
        jobs = jobs[: s.max_shards]
    context = _Context(s, catalog, templates, noise)
    if s.workers == 1:  # this process runs the jobs: keep what is loaded
        context.codec, context.conditions = codec, conditions
    bar = _progress_bar(
        len(catalog), sum(len(j[2]) for j in all_jobs if j[0] in finished), s.progress
    )
    written = left_out = 0
    for ledger in _run(context, jobs, s.workers):
        finished[ledger["shard"]] = ledger
        written, left_out = written + ledger["samples"], left_out + len(ledger["report"])
        bar.update(ledger["inputs"])
        bar.set_postfix_str(f"written={written} left_out={left_out}", refresh=False)
    bar.close()
    catalog.close()
    complete = all(j[0] in finished for j in all_jobs)
    return _finish(out, s, content, catalog, templates, vocab, all_jobs, finished, complete)


def _select_templates(s: TokenShardSettings) -> list[TaskTemplate]:
    available = load_templates(s.templates)
    unknown = [t for t in s.tasks if t not in available]
    if unknown:
        raise ValueError(f"unknown task(s) {unknown}; the templates define {list(available)}")
    chosen = [t for name, t in available.items() if name in s.tasks]  # template-file order
    for t in chosen:
        for seg in t.segments:
            if seg.source not in FIELDS:
                hint = " (embeddings are computed at training time)" * (seg.modality == "embedding")
                raise ValueError(
                    f"task {t.name!r}, segment {seg.name!r} reads field {seg.source!r}, which "
                    f"make_token_shards cannot make{hint}; it makes {', '.join(FIELDS)}"
                )
            if (seg.modality == CODEC) != (seg.source.endswith("codes")):
                raise ValueError(
                    f"task {t.name!r}, segment {seg.name!r}: modality {seg.modality!r} does not "
                    f"match field {seg.source!r}"
                )
    return chosen


def _uses(templates: list[TaskTemplate], field_name: str) -> bool:
    return any(field_name in t.sources for t in templates)


def _tokenizers(templates: list[TaskTemplate]) -> list[str]:
    """The condition tokenizers the templates' token fields need."""
    return [TOKEN_FIELDS[f] for f in TOKEN_FIELDS if _uses(templates, f)]


def _device_type(device: str) -> str:
    """``cpu`` or ``cuda`` (codes may differ between them, not between two GPUs of a kind)."""
    return str(device).split(":")[0]


def _codec_tokenizer(s: TokenShardSettings, device: str):
    from lit_codec.tokenizers.codec import CodecTokenizer, default_max_batch_seconds

    # the batches of the device that encodes, also where this process only reads the info
    seconds = s.max_batch_seconds or default_max_batch_seconds(s.device)
    return CodecTokenizer(s.codec, device=device, max_batch_seconds=seconds, n_q=s.n_q)


def read_vocabulary(path: str | os.PathLike) -> Vocabulary:
    """The vocabulary of a ``CodecLM`` checkpoint (``.ckpt``), a token-shard directory (its
    ``index.json``) or a vocabulary JSON file."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"vocabulary {path}: no such file or directory")
    if path.is_dir():
        index = load_index(path)
        if "vocabulary" not in index:
            raise ValueError(f"{path}/index.json holds no vocabulary: not a token-shard directory")
        return Vocabulary.from_schema(index["vocabulary"])
    if path.suffix == ".ckpt":
        import torch

        state = torch.load(path, map_location="cpu", weights_only=True).get("lit_codec") or {}
        if state.get("vocabulary") is None:
            raise ValueError(f"{path}: not a CodecLM checkpoint (no vocabulary schema)")
        return Vocabulary.from_schema(state["vocabulary"])
    return Vocabulary.load(path)


def _vocabulary(
    templates, codec, conditions: ConditionTokenizers, base: Vocabulary | None = None
) -> Vocabulary:
    sizes, metadata = {}, {}
    for t in templates:
        for seg in t.segments:
            if seg.source in TOKEN_FIELDS:
                tok = conditions.get(TOKEN_FIELDS[seg.source])
                sizes[seg.modality] = tok.vocab_size
                metadata[seg.modality] = tok.metadata()
    return vocabulary_for(templates, codec.info, sizes, metadata=metadata, base=base)


def _content(s, index, templates, codec, vocab, noise) -> dict[str, Any]:
    """Everything the output bytes depend on (a resumed run must match it)."""
    return {
        "input": str(Path(s.input).resolve()),
        "input_index": hashlib.sha256(json.dumps(index, sort_keys=True).encode()).hexdigest()[:16],
        "tasks": [t.name for t in templates],
        "templates": [asdict(t) for t in templates],
        "codec": codec.metadata(),
        "vocab_hash": vocab.hash,
        "pairs": asdict(s.pairs),
        "noise": noise and {"path": str(s.noise), "fingerprint": noise.fingerprint()},
        "language": s.language,
        "max_batch_seconds": codec.max_batch_seconds,
        "shard_max_samples": s.shard_max_samples,
        "threads": s.threads,
        "device": _device_type(s.device),
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
    }


def _resume_state(out: Path, content: dict[str, Any], overwrite: bool) -> dict[str, dict]:
    """The ledgers of finished shards of an earlier run with the same content."""
    progress = out / ".progress"
    stamp = progress / "content.json"
    fingerprint = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    if overwrite and out.exists():
        for p in [
            *out.glob("*-*.tar"),
            *out.glob("*.tmp"),
            out / "index.json",
            out / "report.json",
        ]:
            if p.exists():
                p.unlink()
        shutil.rmtree(progress, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    if stamp.exists():
        if json.loads(stamp.read_text()).get("fingerprint") != fingerprint:
            raise RuntimeError(
                f"{out} holds token shards made with other inputs or settings; "
                "use --overwrite to replace them or choose another --output"
            )
    elif any(out.glob("*-*.tar")):
        raise RuntimeError(f"{out} already holds shards not made by this run; use --overwrite")
    progress.mkdir(exist_ok=True)
    _atomic_write_json(stamp, {"fingerprint": fingerprint, "content": content})
    for tmp in out.glob("*.tmp"):
        tmp.unlink()
    finished = {}
    for path in sorted(progress.glob("*.tar.json")):
        ledger = json.loads(path.read_text())
        if ledger["samples"] == 0 or (out / ledger["shard"]).is_file():
            finished[ledger["shard"]] = ledger
    for shard in out.glob("*-*.tar"):  # a shard whose ledger was lost is redone
        if shard.name not in finished:
            shard.unlink()
    return finished


# --------------------------------------------------------------------------- workers
@dataclass
class _Context:
    """What a worker needs; the builder is made in the worker (tokenizers, codec)."""

    settings: TokenShardSettings
    catalog: ShardCatalog
    templates: list[TaskTemplate]
    noise: NoiseBank | None
    codec: Any = None  # a loaded CodecTokenizer and ConditionTokenizers: in-process runs only
    conditions: ConditionTokenizers | None = None
    builder: SampleBuilder | None = None

    def setup(self) -> SampleBuilder:
        if self.builder is None:
            s = self.settings
            codec = self.codec or _codec_tokenizer(s, s.device)
            conditions = self.conditions or ConditionTokenizers.build(
                _tokenizers(self.templates), codec.frame_rate, s.kmeans, s.bpe
            )
            self.builder = SampleBuilder(
                self.templates, self.catalog, codec, conditions, s.pairs, self.noise, s.language
            )
        return self.builder

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "codec": None, "conditions": None, "builder": None}


_WORKER: _Context | None = None


def _init_worker(context: _Context, parent: int) -> None:
    from lit_codec.data.prepare import _quiet_worker

    global _WORKER
    _quiet_worker()  # dies with the parent from now on ...
    if os.getppid() != parent:  # ... which may have died while this process started
        os._exit(1)
    import torch

    torch.set_num_threads(context.settings.threads)
    _WORKER = context
    _WORKER.setup()


def _worker_job(job) -> dict[str, Any]:
    return _make_shard(_WORKER, job)


def _run(context: _Context, jobs: list, workers: int) -> Iterator[dict[str, Any]]:
    """Ledgers of the jobs as they finish (in this process when ``workers`` is 1)."""
    if not jobs:
        return
    if workers == 1:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(context.settings.threads)
        try:
            context.setup()
            for job in jobs:
                yield _make_shard(context, job)
        finally:
            torch.set_num_threads(threads)
        return
    import multiprocessing

    # spawn: torch's thread pools do not survive fork
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        min(workers, len(jobs)),
        mp_context=ctx,
        initializer=_init_worker,
        initargs=(context, os.getpid()),
    ) as pool:
        yield from pool.map(_worker_job, jobs)


def _groups(catalog: ShardCatalog, ids: list[int], seconds: float) -> Iterator[list[int]]:
    """Consecutive ids with about ``seconds`` of audio (by the catalog's lengths)."""
    rate = catalog.sample_rate or 16000
    group, total = [], 0
    for i in ids:
        group.append(i)
        total += catalog.entries[i].num_samples or rate
        if total >= seconds * rate:
            yield group
            group, total = [], 0
    if group:
        yield group


def _make_shard(context: _Context, job) -> dict[str, Any]:
    """Write one chunk's shard and ledger; return the ledger."""
    name, split, ids = job
    s = context.settings
    builder = context.setup()
    out = Path(s.output)
    tmp = out / (name + ".tmp")
    count, seconds, frames, report = 0, 0.0, 0, []
    tasks = {t.name: 0 for t in context.templates}
    group_seconds = max(MIN_GROUP_SECONDS, 2 * builder.codec.max_batch_seconds)
    with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tar:
        for group in _groups(context.catalog, ids, group_seconds):
            samples, entries = builder.build(split, group)
            report.extend(entries)
            for sample in samples:
                for field_name in sorted(sample.fields):
                    _tar_member(
                        tar, f"{sample.key}.{field_name}.npy", _npy(sample.fields[field_name])
                    )
                payload = json.dumps(sample.meta, sort_keys=True, ensure_ascii=False).encode()
                _tar_member(tar, f"{sample.key}.json", payload)
                count += 1
                seconds += sample.meta["duration"]
                frames += sample.meta["frames"]
                for t in sample.meta["tasks"]:
                    tasks[t] += 1
    ledger = {
        "shard": name,
        "split": split,
        "inputs": len(ids),
        "samples": count,
        "seconds": round(seconds, 6),
        "frames": frames,
        "tasks": tasks,
        "report": report,
    }
    if count:
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
    _atomic_write_json(out / ".progress" / (name + ".json"), ledger)
    if count:
        os.replace(tmp, out / name)
    else:
        tmp.unlink()
    return ledger


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _progress_bar(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=done,
        unit="sample",
        disable=not enabled,
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.1 if sys.stderr.isatty() else 10.0,
    )


# --------------------------------------------------------------------------- index, report
def _finish(
    out, s, content, catalog, templates, vocab, all_jobs, finished, complete
) -> TokenShardResult:
    entries = [
        {**p.to_dict(), "split": None, "task": None, "kept": False} for p in catalog.problems
    ]
    splits: dict[str, dict[str, Any]] = {}
    served = {t.name: 0 for t in templates}
    written = 0
    for name, split, _ in all_jobs:
        ledger = finished.get(name)
        if ledger is None:
            continue
        entries.extend(ledger["report"])
        info = splits.setdefault(
            split,
            {
                "shards": [],
                "num_samples": 0,
                "seconds": 0.0,
                "frames": 0,
                "tasks": dict.fromkeys(served, 0),
            },  # fmt: skip
        )
        if ledger["samples"]:
            info["shards"].append(name)
        info["num_samples"] += ledger["samples"]
        info["seconds"] += ledger["seconds"]
        info["frames"] += ledger["frames"]
        for t, n in ledger["tasks"].items():
            info["tasks"][t] += n
            served[t] += n
        written += ledger["samples"]
    for info in splits.values():
        info["seconds"] = round(info["seconds"], 3)
        info["hours"] = round(info["seconds"] / 3600, 6)
    result = TokenShardResult(
        out,
        complete,
        len(catalog) + len(catalog.problems),
        written,
        splits,
        served,
        entries,
        vocab.hash,
    )
    if not complete:
        return result
    by_reason: dict[str, int] = {}
    for e in entries:
        by_reason[e["reason"]] = by_reason.get(e["reason"], 0) + 1
    by_task = {
        t: {"served": served[t], "skipped": sum(1 for e in entries if e["task"] in (t, None))}
        for t in served
    }
    dropped = [e for e in entries if not e["kept"]]
    report = {
        "samples_in": result.samples_in,
        "samples_out": written,
        "samples_dropped": len({(e["shard"], e["key"]) for e in dropped}),
        "by_reason": dict(sorted(by_reason.items())),
        "by_task": by_task,
        "skipped": entries,
    }
    index = {
        "format": INDEX_FORMAT,
        "version": INDEX_VERSION,
        "created_by": f"lit-codec {__version__}",
        "sample_rate": vocab.codec.sample_rate,
        "codec": content["codec"],
        "tasks": content["tasks"],
        "fields": {t.name: list(t.sources) for t in templates},
        # the templates the samples were made for: the data module builds sequences from
        # these, whatever recipes/lm/tasks.yaml says later (load_templates reads this mapping)
        "templates": {"tasks": content["templates"]},
        "vocab_hash": vocab.hash,
        "vocabulary": {**vocab.schema(), "hash": vocab.hash},
        "splits": splits,
        "samples": {"in": result.samples_in, "out": written},
        "settings": {
            "input": content["input"],
            "pairs": content["pairs"],
            "noise": content["noise"],
            "language": s.language,
            "n_q": vocab.codec.n_q,
            "max_batch_seconds": content["max_batch_seconds"],
            "shard_max_samples": s.shard_max_samples,
            "device": s.device,
        },
    }
    _atomic_write_json(out / "report.json", report)
    _atomic_write_json(out / "index.json", index)
    return result
