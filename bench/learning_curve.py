"""Learning curves: speech quality after 10, 20 and 30 minutes of training, ours against peers.

The same data (the training split of prepared shards, read by
:class:`lit_codec.data.AudioShardDataModule`: the same crops in the same order for every
system), the same batch (``--batch`` clips of ``--segment`` seconds), the same torch threads
(``--threads``) and wall-clock budgets (``--budgets``, minutes of training, counted from the
first step with checkpoint writing taken out), one run per system with a checkpoint at each
budget:

- ``ours``: ``recipes/codec/speech_16khz_convnext.yaml`` (the best recipe), and
- ``seanet``: ``recipes/codec/speech_16khz_6kbps.yaml`` (SEANet), each trained by
  ``lit-codec fit`` in a subprocess with ``OMP_NUM_THREADS=--threads``, the batch, crop
  length, seed 0 and one loader worker set on the command line, validation off, a CSV
  logger, a :class:`lit_codec.callbacks.GeneratorStepCheckpoint` that keeps ``last.ckpt``
  only, and ``learning_curve_support.WallClockBudgets``, which saves
  ``budget_<M>min.ckpt`` at each budget and stops after the last;
- ``encodec``: EnCodec's SEANet + RVQ, MS-STFT discriminator and paper losses, and
- ``dac``: descript-audio-codec's 16 kHz model, discriminator, losses and weights, both
  trained in this process by ``bench/learning_curve_peers.py`` (its docstring says exactly
  how each is built and what differs from the original).

Every checkpoint is scored on the first ``--eval-clips`` clips of the ``test`` split, whole,
at 6 and 3 kbps (12 and 6 of the 12 codebooks of 1024 at 50 frames/s), with PESQ-WB, STOI
and the multi-scale mel distance (:data:`lit_codec.metrics.functional.METRICS`): ours by
``lit-codec evaluate --kbps 3,6 --metrics pesq,stoi,mel`` (its ``report.json``), the peers
by their own encode/decode and the same steps as ``evaluate`` (:func:`lit_codec.evaluate.iter_clips`,
:func:`~lit_codec.metrics.functional.align` with a 20 ms search,
:func:`~lit_codec.metrics.functional.score_pair`, means over the clips scored).

Writes to ``--out``: ``learning_curve.md`` (the table, also printed), ``learning_curve.png``
(PESQ-WB at 6 kbps, solid, and 3 kbps, dashed, against minutes) and ``results.json``; one
folder per system with its checkpoints, logs and evaluation reports. Resumable: a (system,
budget) whose result is in ``results.json`` under the same settings is skipped; a system
with budgets left is trained again from scratch up to the largest of them (its other
results are kept). A peer that cannot be installed or imported is reported as such and the
others go on.

Run (``make bench`` installs the peers; a full run takes 4 x 30 minutes of training plus
evaluation): ``OMP_NUM_THREADS=2 python bench/learning_curve.py --shards data/speech_16k
--out runs/learning_curve [--budgets 10,20,30] [--systems ours,seanet,encodec,dac]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
SAMPLE_RATE = 16_000
KBPS = (6.0, 3.0)
METRICS = ("pesq", "stoi", "mel")
MAX_DELAY_MS = 20.0  # lit-codec evaluate's default
RECIPES = {
    "ours": "recipes/codec/speech_16khz_convnext.yaml",
    "seanet": "recipes/codec/speech_16khz_6kbps.yaml",
}
LABELS = {
    "ours": "ours (speech_16khz_convnext)",
    "seanet": "ours, SEANet (speech_16khz_6kbps)",
    "encodec": "EnCodec (SEANet + RVQ, paper losses)",
    "dac": "DAC (16 kHz config)",
}
SYSTEMS = tuple(LABELS)

sys.path.insert(0, str(BENCH))
from learning_curve_support import budget_tag  # noqa: E402


# --------------------------------------------------------------------------- settings
def settings_of(args: argparse.Namespace) -> dict[str, Any]:
    """What makes two results comparable (a result under other settings is redone)."""
    return {"shards": str(Path(args.shards).resolve()), "batch": args.batch,
            "segment": args.segment, "threads": args.threads, "eval_clips": args.eval_clips,
            "device": args.device, "seed": args.seed}  # fmt: skip


def git_commit() -> str | None:
    """The repository's commit, recorded with each result (for information only)."""
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True, text=True
    )
    return proc.stdout.strip() or None


def load_results(path: Path) -> dict[str, Any]:
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"results": {}, "unavailable": {}}


def save_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)


def max_time(minutes: float) -> str:
    """Lightning's ``DD:HH:MM:SS`` for a number of minutes (rounded up to a second)."""
    s = int(-(-minutes * 60 // 1))
    return f"{s // 86400:02d}:{s // 3600 % 24:02d}:{s // 60 % 60:02d}:{s % 60:02d}"


# --------------------------------------------------------------------------- ours
def train_ours(system: str, args, budgets: list[float], run_dir: Path) -> None:
    """``lit-codec fit`` of the system's recipe until the last budget; checkpoints at each."""
    callbacks = [
        {"class_path": "lit_codec.callbacks.GeneratorStepCheckpoint",
         "init_args": {"every_n_generator_steps": 0, "every_n_epochs": 0,
                       "dirpath": str(run_dir / "checkpoints")}},
        {"class_path": "learning_curve_support.WallClockBudgets",
         "init_args": {"budgets": budgets, "dirpath": str(run_dir / "budgets")}},
    ]  # fmt: skip
    cmd = [
        sys.executable, "-m", "lit_codec.cli", "fit",
        "--config", str(REPO / RECIPES[system]),
        "--seed_everything", str(args.seed),
        "--data.root", str(args.shards),
        "--data.batch_size", str(args.batch),
        "--data.segment_seconds", str(args.segment),
        "--data.num_workers", "1",
        "--data.seed", str(args.seed),
        "--trainer.accelerator", "gpu" if args.device.startswith("cuda") else "cpu",
        "--trainer.devices", "1",
        "--trainer.max_time", max_time(max(budgets) + 5),  # a safety net: the callback stops it
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.save_dir", str(run_dir),
        "--trainer.val_check_interval", "1000000000",
        "--trainer.limit_val_batches", "0",
        "--trainer.num_sanity_val_steps", "0",
        "--trainer.enable_progress_bar", "false",
        f"--trainer.callbacks={json.dumps(callbacks)}",
    ]  # fmt: skip
    threads = str(args.threads)
    env = {**os.environ, "OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads,
           "WANDB_MODE": "disabled",
           "PYTHONPATH": os.pathsep.join([str(REPO), str(BENCH), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    log = run_dir / "fit.log"
    print(f"  lit-codec fit --config {RECIPES[system]} ... (log: {log})", flush=True)
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(f"lit-codec fit exited with {proc.returncode}:\n{tail}")


def evaluate_ours(ckpt: Path, args, eval_dir: Path) -> dict[str, Any]:
    """``lit-codec evaluate`` of one checkpoint; the scores read from its report.json."""
    shutil.rmtree(eval_dir, ignore_errors=True)  # a stale report of an earlier run's checkpoint
    cmd = [
        sys.executable, "-m", "lit_codec.cli", "evaluate",
        "--ckpt", str(ckpt), "--input", str(args.shards), "--split", "test",
        "--kbps", ",".join(f"{k:g}" for k in sorted(KBPS)), "--metrics", ",".join(METRICS),
        "--max-clips", str(args.eval_clips), "--output", str(eval_dir),
        "--workers", "0", "--threads", str(args.threads), "--device", args.device,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    report_path = eval_dir / "report.json"
    if proc.returncode not in (0, 1) or not report_path.is_file():
        raise RuntimeError(
            f"lit-codec evaluate exited with {proc.returncode}:\n{proc.stderr[-3000:]}"
        )
    report = json.loads(report_path.read_text(encoding="utf-8"))
    scores: dict[str, Any] = {}
    for system in report["systems"]:
        if system["family"] == "codec":
            scores[f"{system['kbps']:g}"] = {
                "clips": system["clips"],
                **{m: system["metrics"][m]["mean"] for m in METRICS},
            }
    return scores


# --------------------------------------------------------------------------- peers
def peer_batches(args) -> Iterator[torch.Tensor]:
    """The training crops ``(B, 1, T)`` of the shards, as the recipes' data module gives them."""
    from lit_codec.data import AudioShardDataModule

    data = AudioShardDataModule(root=str(args.shards), sample_rate=SAMPLE_RATE,
                                segment_seconds=args.segment, hop_length=320,
                                batch_size=args.batch, num_workers=1, seed=args.seed)  # fmt: skip
    loader = data.train_dataloader()
    while True:
        for batch in loader:
            yield batch.audio


def train_peer_system(system: str, args, budgets: list[float], run_dir: Path) -> None:
    from learning_curve_peers import build_peer, train_peer

    torch.manual_seed(args.seed)
    peer = build_peer(system, seed=args.seed, device=args.device, micro_batch=args.dac_micro_batch)
    print(f"  {peer.describe()}", flush=True)
    train_peer(peer, peer_batches(args), budgets, run_dir / "budgets")


def evaluate_peer(system: str, ckpt: Path, args) -> dict[str, Any]:
    """The peer's encode/decode of each test clip at each bitrate, scored as evaluate does."""
    import numpy as np
    from learning_curve_peers import FRAME_RATE, load_peer

    from lit_codec.evaluate import iter_clips
    from lit_codec.metrics.functional import align, score_pair
    from lit_codec.metrics.report import summarize

    peer = load_peer(system, ckpt, args.device)
    max_delay = int(round(MAX_DELAY_MS * SAMPLE_RATE / 1000))
    rows: dict[str, list[dict[str, float | None]]] = {f"{k:g}": [] for k in KBPS}
    for clip in iter_clips(str(args.shards), SAMPLE_RATE, "test", args.eval_clips):
        x = torch.from_numpy(clip.audio).view(1, 1, -1).to(args.device)  # (1, 1, T)
        for kbps in KBPS:
            n_q = int(kbps * 1000 // (10 * FRAME_RATE))  # 10 bits per code
            y = peer.reconstruct(x, n_q)[0, 0].float().cpu().numpy()  # (T,)
            ref, deg, _ = align(clip.audio, np.asarray(y, dtype=np.float32), max_delay)
            rows[f"{kbps:g}"].append(score_pair(ref, deg, SAMPLE_RATE, METRICS))
    return {
        key: {
            "clips": len(values),
            **{m: summarize([r.get(m) for r in values]).mean for m in METRICS},
        }
        for key, values in rows.items()
    }


# --------------------------------------------------------------------------- one system
def budget_files(system: str, run_dir: Path, minutes: float) -> tuple[Path, Path]:
    """The checkpoint and the JSON record of a system's budget."""
    tag = budget_tag(minutes)
    suffix = ".ckpt" if system in RECIPES else ".pt"
    return run_dir / "budgets" / f"{tag}{suffix}", run_dir / "budgets" / f"{tag}.json"


def run_system(system: str, args, results: dict[str, Any], results_path: Path) -> None:
    settings = settings_of(args)
    done = results["results"].setdefault(system, {})
    todo = [b for b in args.budgets
            if done.get(f"{b:g}", {}).get("settings") != settings]  # fmt: skip
    if not todo:
        print(f"{system}: every budget already evaluated (results.json)", flush=True)
        return
    run_dir = args.out / system
    run_dir.mkdir(parents=True, exist_ok=True)
    settings_file = run_dir / "settings.json"
    same_run = settings_file.is_file() and json.loads(settings_file.read_text()) == settings
    missing = [b for b in todo
               if not same_run or not all(p.is_file() for p in budget_files(system, run_dir, b))]  # fmt: skip
    if missing:
        budgets = [b for b in args.budgets if b <= max(missing)]
        print(f"{system}: training for {max(budgets):g} min, checkpoints at "
              f"{', '.join(f'{b:g}' for b in budgets)} min", flush=True)  # fmt: skip
        settings_file.unlink(missing_ok=True)
        shutil.rmtree(run_dir / "budgets", ignore_errors=True)
        started = time.perf_counter()
        if system in RECIPES:
            train_ours(system, args, budgets, run_dir)
        else:
            train_peer_system(system, args, budgets, run_dir)
        save_json(settings_file, settings)
        print(
            f"{system}: trained in {time.perf_counter() - started:.0f} s of wall time", flush=True
        )
    for minutes in todo:
        ckpt, record_path = budget_files(system, run_dir, minutes)
        if not ckpt.is_file():
            raise RuntimeError(
                f"{ckpt} was not written (did training stop before {minutes:g} min?)"
            )
        record = json.loads(record_path.read_text(encoding="utf-8"))
        if system in RECIPES:
            scores = evaluate_ours(ckpt, args, run_dir / "eval" / budget_tag(minutes))
        else:
            scores = evaluate_peer(system, ckpt, args)
        done[f"{minutes:g}"] = {**record, "scores": scores, "checkpoint": str(ckpt),
                                "commit": git_commit(), "settings": settings}  # fmt: skip
        results["unavailable"].pop(system, None)
        save_json(results_path, results)
        cells = row_cells(done[f"{minutes:g}"])
        print(f"{system} @ {minutes:g} min: {' | '.join(cells)}", flush=True)


# --------------------------------------------------------------------------- report
def current(results: dict[str, Any], system: str, args) -> dict[float, dict[str, Any]]:
    """The system's results for this run's budgets under this run's settings, by minutes."""
    runs = results["results"].get(system, {})
    settings = settings_of(args)
    return {m: runs[f"{m:g}"] for m in args.budgets
            if runs.get(f"{m:g}", {}).get("settings") == settings}  # fmt: skip


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def row_cells(result: dict[str, Any]) -> list[str]:
    s6, s3 = result["scores"].get("6", {}), result["scores"].get("3", {})
    steps = f"{result['steps']}" + (" (ended early)" if result.get("stopped_early") else "")
    return [steps, _fmt(s6.get("mel")), _fmt(s6.get("pesq")), _fmt(s3.get("pesq")),
            _fmt(s6.get("stoi")), _fmt(s3.get("stoi"))]  # fmt: skip


def table(results: dict[str, Any], args) -> str:
    from lit_codec.metrics.report import format_table

    headers = ["system", "minutes", "generator steps", "mel distance @6 ↓", "PESQ-WB @6",
               "PESQ-WB @3", "STOI @6", "STOI @3"]  # fmt: skip
    rows = []
    for system in args.systems:
        for minutes, result in sorted(current(results, system, args).items()):
            rows.append([LABELS[system], f"{minutes:g}", *row_cells(result)])
        if system in results["unavailable"]:  # the last attempt failed: say why
            reason = results["unavailable"][system].splitlines()[0][:200].replace("|", "/")
            rows.append([LABELS[system], "–", "not run", reason, "", "", "", ""])
    clips = {r["scores"]["6"]["clips"] for system in args.systems
             for r in current(results, system, args).values() if "6" in r["scores"]}  # fmt: skip
    head = (f"# Learning curves\n\n- shards `{args.shards}`; batch {args.batch} x {args.segment:g} s, "
            f"{args.threads} threads, {args.device}; minutes of training from the first step\n"
            f"- test clips scored: {', '.join(str(c) for c in sorted(clips)) or '–'} (whole clips, "
            f"6 and 3 kbps; mel distance: DAC's multi-scale mel L1 at 6 kbps)\n\n")  # fmt: skip
    return head + format_table(headers, rows, markdown=True) + "\n"


def final_ratio(results: dict[str, Any], args) -> float | None:
    """Ours' PESQ-WB at 6 kbps over the best peer's (EnCodec, DAC), at the largest budget both
    reached (None when either is missing)."""
    for minutes in reversed(args.budgets):
        ours = current(results, "ours", args).get(minutes, {}).get("scores", {}).get("6", {})
        peers = [current(results, p, args).get(minutes, {}).get("scores", {}).get("6", {})
                 for p in ("encodec", "dac")]  # fmt: skip
        best = max((p["pesq"] for p in peers if p.get("pesq") is not None), default=None)
        if ours.get("pesq") is not None and best:
            return ours["pesq"] / best
    return None


def plot(results: dict[str, Any], args, path: Path) -> None:
    """PESQ-WB against minutes of training: one colour per system, 6 kbps solid, 3 kbps dashed."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    for i, system in enumerate(args.systems):
        points = sorted(current(results, system, args).items())
        for kbps, style in (("6", "-"), ("3", "--")):
            xy = [(m, r["scores"][kbps]["pesq"]) for m, r in points
                  if r["scores"].get(kbps, {}).get("pesq") is not None]  # fmt: skip
            if xy:
                label = LABELS[system] if kbps == "6" else None
                ax.plot(*zip(*xy), style, marker="o", color=f"C{i}", label=label)
    ax.set_xlabel("minutes of training")
    ax.set_ylabel("PESQ-WB (6 kbps solid, 3 kbps dashed)")
    ax.set_title(f"batch {args.batch} x {args.segment:g} s, {args.threads} threads, {args.device}")
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.savefig(path)


# --------------------------------------------------------------------------- command
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=Path, required=True, help="prepared 16 kHz shard folder")
    parser.add_argument("--out", type=Path, required=True, help="output folder (resumed)")
    parser.add_argument(
        "--budgets", default="10,20,30", help="minutes of training (default: %(default)s)"
    )
    parser.add_argument("--systems", default=",".join(SYSTEMS), help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=2, help="torch threads of every run")
    parser.add_argument("--eval-clips", type=int, default=24, help="test clips scored")
    parser.add_argument("--batch", type=int, default=16, help="clips per training batch")
    parser.add_argument("--segment", type=float, default=1.0, help="seconds per training clip")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every system)")
    parser.add_argument("--dac-micro-batch", type=int, default=4,
                        help="DAC runs a batch in micro-batches of this many clips (memory)")  # fmt: skip
    args = parser.parse_args()
    args.budgets = sorted({float(b) for b in args.budgets.split(",") if b.strip()})
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(args.systems) - set(SYSTEMS))
    if unknown or not args.budgets or min(args.budgets) <= 0:
        parser.error(f"--systems from {', '.join(SYSTEMS)} (unknown: {unknown}); budgets > 0")
    if not (args.shards / "index.json").is_file():
        parser.error(f"--shards {args.shards}: no index.json (data_prep/make_audio_shards.py)")
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # as lit-codec fit does, for every system alike
    args.out.mkdir(parents=True, exist_ok=True)
    results_path = args.out / "results.json"
    results = load_results(results_path)

    for system in args.systems:
        try:
            run_system(system, args, results, results_path)
        except Exception as e:  # noqa: BLE001  (a peer that cannot run must not stop the others)
            from learning_curve_peers import PeerUnavailable

            kind = "unavailable" if isinstance(e, PeerUnavailable) else "failed"
            message = f"{kind}: {e}"
            print(f"{system}: {message}", file=sys.stderr, flush=True)
            results["unavailable"][system] = message
            save_json(results_path, results)

    markdown = table(results, args)
    (args.out / "learning_curve.md").write_text(markdown, encoding="utf-8")
    plot(results, args, args.out / "learning_curve.png")
    print(markdown)
    print(f"written: {args.out}/learning_curve.md, learning_curve.png, results.json")
    ratio = final_ratio(results, args)
    if ratio is not None:
        print(f"ratio: {ratio:.2f}", flush=True)


if __name__ == "__main__":
    main()
