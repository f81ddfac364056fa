"""``lit-codec evaluate-lm``: what a codec LM does on held-out data, in one report.

Time-aligned tasks (``se``, ``dereverb``), from clean audio::

    lit-codec evaluate-lm --ckpt runs/lm/checkpoints/last.ckpt --task se \\
        --input clean_clips/ --output reports/lm_se [--noise noise_recordings/] \\
        [--snr 0:20] [--codec speech16k] [--max-clips 40] [--greedy | --top-k 50 ...]

Each clean clip (a folder of audio files, a prepared shard directory's ``--split`` or shard
files, as ``lit-codec evaluate`` reads them) is degraded the way the task's pairs are made
(:mod:`lit_codec.data.pairs`): ``se`` mixes noise at an SNR drawn in ``--snr``, from
``--noise`` (a folder of recordings or audio shards: unseen noise) or the built-in
``--noise-kinds``; ``dereverb`` convolves with a synthetic room of RT60 in ``--rt60`` and
DRR in ``--drr``. Every draw is seeded by ``(--seed, clip name)``, so every run and every
checkpoint sees the same degraded inputs. The degraded clip is tokenized by the codec,
the LM generates the clean target's tokens (batched, sampling options as ``lit-codec
generate``), and the codec decodes them. Four systems are scored against the clean clip
with ``--metrics`` (PESQ, STOI, ESTOI, SI-SDR by default):

- ``degraded``: the degraded input itself;
- ``codec(clean)``: the codec's reconstruction of the clean clip: the ceiling any LM
  producing this codec's tokens can reach;
- ``codec(degraded)``: the codec's reconstruction of the degraded input (the LM copying
  its condition would score this);
- ``lm``: the generated audio, cut or zero-padded to the clean clip's length (audio the
  LM did not generate counts as silence).

Token accuracy per codebook against the clean clip's own codes, frame by frame, is
reported for ``lm`` and for ``codec(degraded)`` (the accuracy of copying the condition).

Any task, teacher-forced, from token shards (``--tokens ROOT [--split test]``): the
per-codebook accuracy and perplexity of the target segment of every held-out sequence of
the task (``data_prep/make_token_shards.py`` output, the LM's vocabulary).

``--output`` receives ``report.json``, ``report.md``, ``report.png`` (bars of each metric
per system) and, for the first ``--write-audio`` clips, ``audio/<clip>/{clean,degraded,
codec_clean,codec_degraded,lm}.wav`` to listen to.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lit_codec.commands.common import DEFAULT_CODEC, add_threads_argument, run_guarded, set_threads

__all__ = ["EvalClip", "TokenFigures", "degrade", "evaluate_lm_main", "parser", "token_figures"]

ALIGNED_TASKS = ("se", "dereverb")
SYSTEMS = ("degraded", "codec(clean)", "codec(degraded)", "lm")
DEFAULT_METRICS = "pesq,stoi,estoi,sisdr"


@dataclass
class EvalClip:
    """One held-out clip: clean audio, its degraded version, and what was drawn."""

    id: str
    clean: np.ndarray  # (T,) float32 at the codec's rate
    degraded: np.ndarray  # (T,) float32
    drawn: dict[str, Any]


@dataclass
class TokenFigures:
    """Teacher-forced figures of one task's target tokens.

    Attributes:
        sequences: held-out sequences scored.
        tokens: ``(n_q,)`` target tokens per codebook.
        accuracy: ``(n_q,)`` share whose argmax is right.
        perplexity: ``(n_q,)`` ``exp`` of the mean cross-entropy.
        majority_accuracy: ``(n_q,)`` accuracy of always predicting the codebook's most
            frequent target value (the floor to beat).
    """

    sequences: int
    tokens: list[int]
    accuracy: list[float]
    perplexity: list[float]
    majority_accuracy: list[float]


# --------------------------------------------------------------------------- degradation
def _range(text: str, flag: str) -> tuple[float, float]:
    low, sep, high = text.partition(":")
    try:
        bounds = (float(low), float(high if sep else low))
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected LOW:HIGH or one number") from None
    if bounds[0] > bounds[1]:
        raise ValueError(f"{flag} {text!r}: LOW > HIGH")
    return bounds


def degrade(
    task: str,
    clip_id: str,
    clean: np.ndarray,
    sample_rate: int,
    seed: int = 0,
    snr: tuple[float, float] = (0.0, 20.0),
    noise: Any = None,
    noise_kinds: tuple[str, ...] = ("white", "pink"),
    rt60: tuple[float, float] = (0.2, 1.0),
    drr: tuple[float, float] = (0.0, 10.0),
) -> tuple[np.ndarray, dict[str, Any]]:
    """The degraded input of a time-aligned task for one clean clip, and what was drawn.

    Draws come from :func:`lit_codec.data.pairs.draw_rng` seeded by ``(seed, clip_id)``:
    the same clip gets the same input on every run.

    Args:
        task: ``"se"`` (noise) or ``"dereverb"`` (a synthetic room).
        noise: a :class:`lit_codec.data.pairs.NoiseBank` of recordings, or None for the
            built-in ``noise_kinds`` (``white``, ``pink``).
    """
    from lit_codec.data.pairs import (
        draw_rng,
        fit_length,
        mix_at_snr,
        reverberate,
        synthetic_noise,
        synthetic_rir,
    )

    if task == "se":
        rng = draw_rng(seed, clip_id, "eval-noisy")
        level = float(rng.uniform(*snr))
        if noise is not None:
            j = int(rng.integers(len(noise)))
            other = fit_length(noise.read(j), len(clean), rng)
            drawn: dict[str, Any] = {"noise": noise.name(j)}
        else:
            kind = noise_kinds[int(rng.integers(len(noise_kinds)))]
            other = synthetic_noise(kind, len(clean), rng)
            drawn = {"noise": kind}
        noisy, gain = mix_at_snr(clean, other, level)
        return noisy.astype(np.float32), {
            **drawn,
            "snr_db": round(level, 2),
            "gain_db": round(gain, 2),
        }
    if task == "dereverb":
        rng = draw_rng(seed, clip_id, "eval-reverberant")
        t60, ratio = float(rng.uniform(*rt60)), float(rng.uniform(*drr))
        wet = reverberate(clean, synthetic_rir(sample_rate, t60, ratio, rng))
        peak = float(np.max(np.abs(wet))) if wet.size else 0.0
        gain = min(1.0, 0.999 / peak) if peak > 0 else 1.0
        return (wet * gain).astype(np.float32), {
            "rt60": round(t60, 3),
            "drr_db": round(ratio, 2),
            "gain_db": round(20 * math.log10(gain), 2),
        }
    raise ValueError(
        f"evaluate-lm generates and scores audio for the time-aligned tasks {ALIGNED_TASKS}; "
        f"for task {task!r} use --tokens ROOT (teacher-forced token figures)"
    )


def fit_to(audio: np.ndarray, n: int) -> np.ndarray:
    """``audio`` cut or zero-padded to ``n`` samples."""
    out = np.zeros(n, np.float32)
    out[: min(n, len(audio))] = audio[:n]
    return out


# --------------------------------------------------------------------------- token figures
def token_accuracy(codes: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-codebook ``(hits, frames)`` of ``codes`` ``(F, n_q)`` against ``reference``
    ``(F', n_q)`` frame by frame; frames one of them lacks count as misses."""
    n = min(len(codes), len(reference))
    hits = (codes[:n] == reference[:n]).sum(0).astype(np.int64)  # (n_q,)
    frames = np.full(reference.shape[1], max(len(codes), len(reference)), np.int64)
    return hits, frames


def token_figures(network: Any, batches: list[Any], n_q: int) -> TokenFigures:
    """Teacher-forced accuracy and perplexity of the target tokens of ``batches``."""
    import torch

    ce = torch.zeros(n_q, dtype=torch.float64)
    hits = torch.zeros(n_q, dtype=torch.float64)
    tokens = torch.zeros(n_q, dtype=torch.float64)
    counts: torch.Tensor | None = None
    sequences = 0
    network.eval()
    with torch.inference_mode():
        for batch in batches:
            mask = batch.loss_mask
            if not bool(mask.any()):
                continue
            sequences += int(mask.any(-1).any(-1).sum())
            rows = network.loss_rows(mask)
            out = network(batch.ids, batch.continuous, batch.is_continuous, rows=rows)
            result = network.loss(out, batch.ids, mask, rows=rows)
            t = result.tokens.double()
            ce += result.per_codebook.double() * t
            hits += result.accuracy.double() * t
            tokens += t
            targets = network.targets_to_local(batch.ids[:, 1:], check=False)  # (B, F - 1, n_q)
            real = mask[:, 1:] & (targets >= 0)
            size = int(max(network.head_sizes))
            flat = (targets.clamp(min=0) + torch.arange(n_q) * size)[real]
            c = torch.bincount(flat, minlength=n_q * size).view(n_q, size)
            counts = c if counts is None else counts + c
    if sequences == 0:
        raise ValueError("no held-out sequence of the task holds a target token")
    n = tokens.clamp(min=1)
    majority = counts.max(1).values.double() / n if counts is not None else torch.zeros(n_q)
    return TokenFigures(
        sequences,
        [int(x) for x in tokens],
        [round(float(x), 4) for x in hits / n],
        [round(float(math.exp(x)), 2) for x in ce / n],
        [round(float(x), 4) for x in majority],
    )


# --------------------------------------------------------------------------- report
@dataclass
class _Report:
    header: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, metrics: list[str]) -> list[dict[str, Any]]:
        from lit_codec.metrics.report import summarize

        out = []
        for system in SYSTEMS:
            rows = [r for r in self.rows if r["system"] == system]
            if not rows:
                continue
            entry: dict[str, Any] = {
                "system": system,
                "clips": len(rows),
                "metrics": {
                    m: asdict(summarize([r["scores"].get(m) for r in rows])) for m in metrics
                },
            }
            if any("token_hits" in r for r in rows):
                hits = np.sum([r["token_hits"] for r in rows if "token_hits" in r], axis=0)
                frames = np.sum([r["token_frames"] for r in rows if "token_frames" in r], axis=0)
                entry["token_accuracy"] = [
                    round(float(h / max(f, 1)), 4) for h, f in zip(hits, frames)
                ]
            out.append(entry)
        return out


def _markdown(report: dict[str, Any]) -> str:
    from lit_codec.metrics.functional import better_arrow
    from lit_codec.metrics.report import format_table

    h = report
    lines = [f"# Codec-LM evaluation: task `{h['task']}`", ""]
    lines.append(f"- LM: `{h['lm']['checkpoint']}` (vocabulary `{h['lm']['vocab_hash']}`)")
    lines.append(f"- codec: `{h['codec']['name']}` (fingerprint `{h['codec']['fingerprint']}`)")
    if "input" in h:
        lines.append(
            f"- input: `{h['input']}`: {h['clips']['count']} clips, {h['clips']['seconds']:.1f} s; "
            f"degradation {h['degradation']}"
        )
        lines.append(
            f"- sampling: {h['sampling']}; {h['generation']['frames_per_second']:.1f} frames/s"
        )
        lines.append("- mean ± standard deviation over the clips each metric could score")
        lines.append("")
        metrics = h["metrics"]
        arrows = {m: better_arrow(m) for m in metrics}
        rows = []
        for s in h["systems"]:
            cells = []
            for m in metrics:
                v = s["metrics"][m]
                digits = 2 if m == "sisdr" else 3
                cells.append(
                    "–" if v["mean"] is None else f"{v['mean']:.{digits}f} ± {v['std']:.{digits}f}"
                )
            rows.append([s["system"], str(s["clips"]), *cells])
        lines.append(
            format_table(
                ["system", "clips", *(f"{m} {arrows[m]}" for m in metrics)], rows, markdown=True
            )
        )
        books = [s for s in h["systems"] if "token_accuracy" in s]
        if books:
            n_q = len(books[0]["token_accuracy"])
            lines += ["", "Token accuracy against the clean clip's codes, per codebook:", ""]
            rows = [[s["system"], *(f"{a:.3f}" for a in s["token_accuracy"])] for s in books]
            lines.append(
                format_table(["system", *(f"cb{k}" for k in range(n_q))], rows, markdown=True)
            )
    if "teacher_forced" in h:
        t = h["teacher_forced"]
        lines += [
            "",
            f"## Teacher-forced target tokens (`{h['tokens']}`, split {h['split']}: {t['sequences']} sequences)",
            "",
        ]
        n_q = len(t["accuracy"])
        rows = [
            ["accuracy", *(f"{a:.3f}" for a in t["accuracy"])],
            ["majority accuracy", *(f"{a:.3f}" for a in t["majority_accuracy"])],
            ["perplexity", *(f"{p:.1f}" for p in t["perplexity"])],
        ]
        lines.append(format_table(["", *(f"cb{k}" for k in range(n_q))], rows, markdown=True))
    return "\n".join(lines) + "\n"


def _plot(report: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = report["metrics"]
    systems = report["systems"]
    fig = Figure(figsize=(3.2 * len(metrics), 3.4), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        names = [s["system"] for s in systems]
        means = [s["metrics"][m]["mean"] or 0.0 for s in systems]
        stds = [s["metrics"][m]["std"] or 0.0 for s in systems]
        ax.bar(
            range(len(names)),
            means,
            yerr=stds,
            capsize=3,
            color=["0.6", "C2", "C0", "C3"][: len(names)],
        )
        ax.set_xticks(range(len(names)), names, rotation=30, ha="right", fontsize=8)
        ax.set_title(m)
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"task {report['task']}: {report['clips']['count']} clips")
    fig.savefig(path)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:80] or "clip"


# --------------------------------------------------------------------------- command
def parser() -> argparse.ArgumentParser:
    """The options of ``lit-codec evaluate-lm``."""
    p = argparse.ArgumentParser(
        prog="lit-codec evaluate-lm",
        description="evaluate a codec LM: generated audio of time-aligned tasks scored against "
        "the clean reference beside the degraded input and the codec's ceiling, and/or "
        "teacher-forced token figures on token shards",
    )
    p.add_argument("--ckpt", required=True, help="CodecLM checkpoint (.ckpt)")
    p.add_argument("--codec", default=DEFAULT_CODEC,
                   help=f"the codec the LM's tokens come from (default {DEFAULT_CODEC})")  # fmt: skip
    p.add_argument(
        "--task", required=True, help="task to evaluate (se, dereverb; any with --tokens)"
    )
    p.add_argument("--templates", default=None, help="tasks YAML (default recipes/lm/tasks.yaml)")
    p.add_argument("--output", required=True, help="report folder")
    src = p.add_argument_group("audio (time-aligned tasks)")
    src.add_argument(
        "--input", help="clean clips: audio folder, prepared shard directory or shard files"
    )
    src.add_argument("--split", default="test", help="split of a prepared directory (default test)")
    src.add_argument("--max-clips", type=int, default=None)
    src.add_argument(
        "--noise", help="se: noise recordings (folder or audio shards); default: built-in noise"
    )
    src.add_argument(
        "--noise-kinds", default="white,pink", help="se: built-in noises without --noise"
    )
    src.add_argument("--snr", default="0:20", help="se: SNR range in dB, LOW:HIGH (default 0:20)")
    src.add_argument("--rt60", default="0.2:1.0", help="dereverb: RT60 range in s")
    src.add_argument("--drr", default="0:10", help="dereverb: direct-to-reverberant range in dB")
    src.add_argument("--seed", type=int, default=0, help="seed of the degradations and of sampling")
    src.add_argument("--metrics", default=DEFAULT_METRICS, help=f"default {DEFAULT_METRICS}")
    src.add_argument("--write-audio", type=int, default=4, help="clips whose audio is written")
    tok = p.add_argument_group("tokens (any task, teacher forcing)")
    tok.add_argument(
        "--tokens", help="token shards (make_token_shards.py output) of the LM's vocabulary"
    )
    tok.add_argument(
        "--max-tokens", type=int, default=8000, help="padded frames per teacher-forced batch"
    )
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--greedy", action="store_true")
    s.add_argument("--cfg-coef", type=float, default=1.0)
    s.add_argument("--batch-size", type=int, default=8, help="clips generated together")
    s.add_argument("--device", default="cpu")
    add_threads_argument(p)
    return p


def _check_clean_input(a: argparse.Namespace) -> None:
    if a.input is None and a.tokens is None:
        raise ValueError(
            "give --input CLEAN_CLIPS (time-aligned tasks) and/or --tokens TOKEN_SHARDS"
        )
    if a.input is not None and a.task not in ALIGNED_TASKS:
        raise ValueError(
            f"--input: audio is generated and scored for the time-aligned tasks {ALIGNED_TASKS}; "
            f"for task {a.task!r} use --tokens ROOT"
        )


def run(a: argparse.Namespace) -> None:
    """Evaluate and write the report."""
    from lit_codec.lm.templates import load_templates
    from lit_codec.metrics.functional import check_metric_names
    from lit_codec.models.codec_lm import load_network

    _check_clean_input(a)
    metrics = list(check_metric_names([m for m in a.metrics.split(",") if m]))
    set_threads(a.threads)
    network, vocab = load_network(a.ckpt, map_location=a.device)
    network.eval()
    if a.task not in vocab.tasks:
        raise ValueError(
            f"the LM {a.ckpt} was not trained for task {a.task!r}; its tasks: {list(vocab.tasks)}"
        )
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "task": a.task,
        "lm": {"checkpoint": str(a.ckpt), "vocab_hash": vocab.hash},
        "codec": {"name": str(a.codec), "fingerprint": vocab.codec.fingerprint},
    }
    if a.tokens is not None:
        from lit_codec.data.token_datamodule import TokenShardDataModule

        data = TokenShardDataModule(
            root=a.tokens, tasks={a.task: 1.0}, max_tokens=a.max_tokens, num_workers=0
        )
        data.read_index()
        try:
            vocab.check_compatible(data.vocabulary)
        except ValueError as err:
            raise ValueError(
                f"--tokens {a.tokens} was not made for the LM {a.ckpt}: {err}"
            ) from None
        figures = token_figures(network, data.eval_batches(a.split), vocab.codec.n_q)
        report.update(tokens=str(a.tokens), split=a.split, teacher_forced=asdict(figures))
        print(f"teacher-forced {a.task} ({figures.sequences} sequences): accuracy per codebook "
              + " ".join(f"{x:.3f}" for x in figures.accuracy))  # fmt: skip
    if a.input is not None:
        templates = load_templates(a.templates)
        if a.task not in templates:
            raise ValueError(
                f"task {a.task!r} is not in the templates {a.templates or 'recipes/lm/tasks.yaml'}"
            )
        _run_audio(a, network, vocab, templates[a.task], metrics, report, out)
    else:
        report["metrics"] = []
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(_markdown(report))
    if report.get("systems"):
        _plot(report, out / "report.png")
    print(f"report: {out / 'report.md'}")


def _run_audio(a, network, vocab, template, metrics, report, out: Path) -> None:
    import soundfile as sf
    import torch

    from lit_codec.commands.generate import check_codec
    from lit_codec.data.pairs import NoiseBank
    from lit_codec.evaluate import iter_clips
    from lit_codec.lm.generate import GenerationConfig, Prefix, generate
    from lit_codec.lm.sequence import build_sequence
    from lit_codec.metrics.functional import score_pair
    from lit_codec.tokenizers.codec import CodecTokenizer

    tokenizer = CodecTokenizer(a.codec, device=a.device, n_q=vocab.codec.n_q)
    check_codec(tokenizer.codec, vocab, a.codec, a.ckpt)
    codec, rate = tokenizer.codec, tokenizer.sample_rate
    condition = next(s.source for s in template.conditions)
    noise = NoiseBank.from_path(a.noise, rate) if a.noise else None
    kinds = tuple(k for k in a.noise_kinds.split(",") if k)
    bad = sorted(set(kinds) - {"white", "pink"})
    if bad:
        raise ValueError(
            f"--noise-kinds: {bad} unknown; built-in evaluation noise is white or pink"
        )
    settings = dict(seed=a.seed, snr=_range(a.snr, "--snr"), noise=noise, noise_kinds=kinds,
                    rt60=_range(a.rt60, "--rt60"), drr=_range(a.drr, "--drr"))  # fmt: skip
    unreadable: list[str] = []
    clips = []
    for c in iter_clips(
        a.input, rate, a.split, a.max_clips, on_error=lambda n, r: unreadable.append(f"{n}: {r}")
    ):
        degraded, drawn = degrade(a.task, c.id, c.audio, rate, **settings)
        clips.append(EvalClip(c.id, c.audio.astype(np.float32), degraded, drawn))
    if not clips:
        raise ValueError(f"--input {a.input} (split {a.split}) holds no readable clip")
    for item in unreadable:
        print(f"skipped {item}", file=sys.stderr)

    def decode(codes: np.ndarray) -> np.ndarray:  # (F, n_q) -> (T,)
        if len(codes) == 0:
            return np.zeros(0, np.float32)
        with torch.no_grad():
            t = torch.as_tensor(codes.T.astype(np.int64))[None].to(tokenizer.device)  # (1, n_q, F)
            return codec.decode(t)[0, 0].float().cpu().numpy()

    clean_codes = tokenizer.encode_batch([c.clean for c in clips], rate)
    degraded_codes = tokenizer.encode_batch([c.degraded for c in clips], rate)
    order = sorted(
        range(len(clips)), key=lambda i: len(degraded_codes[i])
    )  # similar lengths together
    generated: dict[int, np.ndarray] = {}
    seconds, frames = 0.0, 0
    size = max(1, a.batch_size)
    print(f"generating {len(clips)} clips in batches of {size}", flush=True)
    for first in range(0, len(order), size):
        group = order[first : first + size]
        lengths = [len(degraded_codes[i]) for i in group]
        sequences = []
        for i in group:
            fields = {condition: degraded_codes[i],
                      template.target.source: np.zeros((0, vocab.codec.n_q), np.int16)}  # fmt: skip
            sequences.append(build_sequence(vocab, template, fields))
        config = GenerationConfig(
            temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, greedy=a.greedy,
            max_frames=int(1.1 * max(lengths)) + 1, min_frames=int(0.9 * min(lengths)),
            cfg_coef=a.cfg_coef, seed=a.seed + first,
        )  # fmt: skip
        result = generate(network, vocab, Prefix.from_sequences(sequences, vocab), config)
        seconds += result.seconds
        for j, i in enumerate(group):
            n = int(result.lengths[j])
            generated[i] = result.codes[j, :n].numpy().astype(np.int16)
            frames += n
        print(f"  {min(first + size, len(order))}/{len(order)} clips, "
              f"{result.frames_per_second:.1f} frames/s", flush=True)  # fmt: skip
    max_delay = int(0.04 * rate)
    rows = []
    for i, clip in enumerate(clips):
        n = len(clip.clean)
        outputs = {
            "degraded": clip.degraded,
            "codec(clean)": fit_to(decode(clean_codes[i]), n),
            "codec(degraded)": fit_to(decode(degraded_codes[i]), n),
            "lm": fit_to(decode(generated[i]), n),
        }
        for system, audio in outputs.items():
            row: dict[str, Any] = {"clip": clip.id, "system": system, "drawn": clip.drawn,
                                   "scores": score_pair(clip.clean, audio, rate, metrics,
                                                        max_delay=0 if system == "lm" else max_delay)}  # fmt: skip
            codes = {"lm": generated[i], "codec(degraded)": degraded_codes[i]}.get(system)
            if codes is not None:
                hits, total = token_accuracy(codes, clean_codes[i])
                row["token_hits"], row["token_frames"] = hits.tolist(), total.tolist()
            if system == "lm":
                row["frames"] = len(generated[i])
            rows.append(row)
        if i < a.write_audio:
            folder = out / "audio" / _safe(clip.id)
            folder.mkdir(parents=True, exist_ok=True)
            sf.write(folder / "clean.wav", clip.clean, rate)
            for system, audio in outputs.items():
                name = system.replace("(", "_").replace(")", "")
                sf.write(folder / f"{name}.wav", np.clip(audio, -1, 1), rate)
    rep = _Report({}, rows)
    report.update(
        input=str(a.input),
        split=a.split,
        clips={
            "count": len(clips),
            "seconds": round(sum(len(c.clean) for c in clips) / rate, 2),
            "unreadable": unreadable,
        },  # fmt: skip
        degradation=(
            f"noise ({a.noise or ', '.join(kinds)}) at {a.snr} dB SNR, seed {a.seed}"
            if a.task == "se"
            else f"synthetic rooms, RT60 {a.rt60} s, DRR {a.drr} dB, seed {a.seed}"
        ),
        sampling={
            "temperature": a.temperature,
            "top_k": a.top_k,
            "top_p": a.top_p,
            "greedy": a.greedy,
            "cfg_coef": a.cfg_coef,
        },  # fmt: skip
        generation={
            "frames": frames,
            "seconds": round(seconds, 2),
            "frames_per_second": frames / max(seconds, 1e-9),
        },  # fmt: skip
        metrics=metrics,
        systems=rep.summary(metrics),
        per_clip=rows,
    )
    for s in report["systems"]:
        figures = ", ".join(
            f"{m} {s['metrics'][m]['mean']:.3f}"
            for m in metrics
            if s["metrics"][m]["mean"] is not None
        )
        print(f"{s['system']:>16}: {figures}")


def evaluate_lm_main(argv: list[str]) -> None:
    """``lit-codec evaluate-lm ARGS``."""
    started = time.perf_counter()
    run_guarded("evaluate-lm", run, parser().parse_args(argv))
    print(f"evaluate-lm: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":  # pragma: no cover
    evaluate_lm_main(sys.argv[1:])
