"""Rate–distortion reports: summaries of per-clip scores, tables and the plot.

Used by ``lit-codec evaluate`` (:mod:`lit_codec.evaluate`) and ``lit-codec score``
(:mod:`lit_codec.scoring`): :func:`summarize` gives the mean ± standard deviation of a
metric over the clips it could score and counts the rest, :func:`build_report` gathers
per-clip rows into per-system summaries (the JSON report), :func:`report_markdown` renders
it as tables and :func:`plot_rate_distortion` draws PESQ, STOI and ViSQOL against the
bitrate, one curve per codec family, as codec papers (SoundStream, EnCodec, DAC) show them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from lit_codec.metrics.base import MetricSummary
from lit_codec.metrics.functional import better_arrow

__all__ = [
    "PLOTTED_METRICS",
    "System",
    "build_report",
    "format_table",
    "plot_rate_distortion",
    "report_markdown",
    "summarize",
]

PLOTTED_METRICS = ("pesq", "stoi", "visqol_speech", "visqol_audio")


@dataclass(frozen=True)
class System:
    """One point of a rate–distortion curve: the codec at a bitrate, or a baseline."""

    label: str  # "codec@3kbps", "opus@6kbps": the key of its rows
    family: str  # "codec", "codec+denoise", a baseline name ("opus") or "input" (uncoded)
    kbps: float  # the codec's bitrate, or the bitrate asked of the baseline
    n_q: int | None = None  # codebooks used (codec only)


def summarize(values: Sequence[float | None]) -> MetricSummary:
    """Mean and population standard deviation of the non-``None`` values, and the counts."""
    scored = [float(v) for v in values if v is not None and math.isfinite(v)]
    skipped = len(values) - len(scored)
    if not scored:
        return MetricSummary(None, None, 0, skipped)
    return MetricSummary(float(np.mean(scored)), float(np.std(scored)), len(scored), skipped)


def format_table(
    headers: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = False
) -> str:
    """A plain-text table with aligned columns (a GitHub markdown table with ``markdown``)."""
    widths = [max(len(str(h)), *(len(str(r[i])) for r in rows)) for i, h in enumerate(headers)]
    if markdown:
        lines = [
            "| " + " | ".join(str(h) for h in headers) + " |",
            "|" + "|".join(" --- " for _ in headers) + "|",
        ]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
        return "\n".join(lines)
    fmt = "  ".join(f"{{:<{w}}}" if i == 0 else f"{{:>{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*headers), "  ".join("-" * w for w in widths)]
    lines += [fmt.format(*(str(c) for c in row)) for row in rows]
    return "\n".join(lines)


def build_report(
    rows: dict[tuple[str, str], dict[str, Any]],
    clip_ids: Sequence[str],
    systems: Sequence[System],
    metrics: Sequence[str],
    header: dict[str, Any],
    codebook: dict[str, dict[str, Any] | None],
) -> dict[str, Any]:
    """The JSON report: ``header``, one summary per system, and the per-clip rows.

    Args:
        rows: per-clip result rows by ``(clip id, system label)``; each has ``scores``
            (metric -> value or ``None``) and, when known, ``actual_kbps``.
        clip_ids: the clips of this evaluation (rows of other clips are left out).
        systems: the systems in report order.
        metrics: the metric names to summarise.
        header: what describes the run (codec, input, metrics, ...), copied on top.
        codebook: codebook figures by system label (codec systems only).

    Returns:
        ``{**header, "systems": [...], "per_clip": [...]}``; each system has ``label``,
        ``family``, ``kbps``, ``actual_kbps`` (mean over clips), ``n_q``, ``clips`` and
        ``metrics[name] = {"mean", "std", "scored", "skipped"}``.
    """
    per_system = []
    per_clip = []
    for system in systems:
        system_rows = [rows[(c, system.label)] for c in clip_ids if (c, system.label) in rows]
        per_clip += system_rows
        actual = [r["actual_kbps"] for r in system_rows if r.get("actual_kbps") is not None]
        entry: dict[str, Any] = {
            "label": system.label,
            "family": system.family,
            "kbps": system.kbps,
            "actual_kbps": float(np.mean(actual)) if actual else None,
            "n_q": system.n_q,
            "clips": len(system_rows),
            "metrics": {
                m: asdict(summarize([r["scores"].get(m) for r in system_rows])) for m in metrics
            },
        }
        if system.family == "codec":
            entry["codebook"] = codebook.get(system.label)
        per_system.append(entry)
    return {**header, "systems": per_system, "per_clip": per_clip}


def _cell(summary: dict[str, Any], metric: str) -> str:
    if summary["mean"] is None:
        return f"– ({summary['skipped']} skipped)"
    digits = 2 if metric == "sisdr" else 3
    text = f"{summary['mean']:.{digits}f} ± {summary['std']:.{digits}f}"
    return text + (f" ({summary['skipped']} skipped)" if summary["skipped"] else "")


def report_markdown(report: dict[str, Any]) -> str:
    """The report of :func:`build_report` as markdown: one table of metrics, one of codebooks."""
    metrics = report["metrics"]
    codec = report["codec"]
    lines = [
        "# Rate–distortion report",
        "",
        f"- codec: `{codec['checkpoint']}` (fingerprint `{codec['fingerprint']}`), {codec['sample_rate']} Hz, "
        f"{codec['n_q']} × {codec['codebook_size']} codes at {codec['frame_rate']:g} frames/s",
        f"- input: `{report['input']}`: {report['clips']['count']} clips, {report['clips']['seconds']:.1f} s"
        + (
            f" ({len(report['clips']['unreadable'])} unreadable, skipped)"
            if report["clips"]["unreadable"]
            else ""
        ),
        *(
            [
                f"- inputs: the clips mixed with {report['noise']['kind']} noise at "
                f"{report['noise']['snr_db']:g} dB SNR, scored against the clean clips"
            ]
            if report.get("noise")
            else []
        ),
        f"- constant delay removed by cross-correlation (up to {report['max_delay_ms']:g} ms); "
        "mean ± standard deviation over the clips each metric could score",
        "",
    ]
    arrows = {m: better_arrow(m) for m in metrics}
    rows = []
    for s in report["systems"]:
        actual = "–" if s["actual_kbps"] is None else f"{s['actual_kbps']:.2f}"
        rows.append(
            [s["label"], actual, str(s["clips"]), *(_cell(s["metrics"][m], m) for m in metrics)]
        )
    lines.append(
        format_table(
            ["system", "kbps", "clips", *(f"{m} {arrows[m]}" for m in metrics)], rows, markdown=True
        )
    )
    books = [(s["label"], s["codebook"]) for s in report["systems"] if s.get("codebook")]
    if books:
        lines += ["", "## Codebooks", ""]
        rows = [
            [
                label,
                f"{b['kbps']:.3g}",
                f"{b['entropy_kbps']:.3g}",
                " / ".join(f"{u:.1%}" for u in b["usage"]),
                " / ".join(f"{p:.1f}" for p in b["perplexity"]),
            ]
            for label, b in books
        ]
        headers = [
            "system",
            "kbps",
            "entropy-coded kbps",
            "usage per layer",
            "perplexity per layer",
        ]
        lines.append(format_table(headers, rows, markdown=True))
    return "\n".join(lines) + "\n"


def plot_rate_distortion(report: dict[str, Any], path: str | os.PathLike) -> list[str]:
    """Draw each of PESQ, STOI and ViSQOL (those in the report) against the bitrate spent.

    One curve per family (the codec, each baseline), error bars of one standard deviation.
    Uses matplotlib's Agg canvas (no display, no global pyplot state).

    Returns:
        The metrics drawn.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    metrics = [m for m in PLOTTED_METRICS if m in report["metrics"]] or list(report["metrics"][:3])
    fig = Figure(figsize=(4.2 * len(metrics), 3.6), dpi=120, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    families: dict[str, list[dict[str, Any]]] = {}
    for s in report["systems"]:
        families.setdefault(s["family"], []).append(s)
    names = {
        "codec": f"lit-codec ({report['codec']['fingerprint'][:8]})",
        "codec+denoise": "lit-codec, denoising",
        "opus": "Opus",
        "input": "input, uncoded",
    }
    for ax, metric in zip(axes, metrics):
        for family, systems in families.items():
            points = sorted(
                (
                    (
                        s["actual_kbps"] if s["actual_kbps"] is not None else s["kbps"],
                        s["metrics"][metric],
                    )
                    for s in systems
                    if s["metrics"][metric]["mean"] is not None
                ),
                key=lambda point: point[0],
            )
            if not points:
                continue
            x = [p[0] for p in points]
            y = [p[1]["mean"] for p in points]
            err = [p[1]["std"] for p in points]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=names.get(family, family))
        ax.set_xlabel("bitrate (kbit/s)")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} {better_arrow(metric)}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.savefig(path)
    return metrics
