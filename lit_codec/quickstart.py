"""``make quickstart``: the main job, end to end, on the audio the repository ships.

1. prepare ``data_prep/samples`` into 16 kHz shards (``<workdir>/shards``);
2. train ``recipes/codec/debug.yaml`` on them for a few minutes (``<workdir>/run``);
   ``--steps`` counts generator steps, Lightning's ``max_steps`` optimizer steps of both
   networks: the quickstart prints how one gives the other;
3. encode a held-out speech clip to codes and decode it back (``<workdir>/out``), with the
   codec it trained and with the codec the package ships (``speech16k``, no training);
4. print what it did, the files it wrote and the quality of both reconstructions, next to
   what the speech recipe reaches (a few minutes of training make a smoke test, not a
   codec), and the command to go on with, as it can be typed here.

Usage: python -m lit_codec.quickstart [--workdir quickstart] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import textwrap
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SPEECH_RECIPE = "recipes/codec/speech_16khz_convnext.yaml"
# What the speech recipe reached, quoted from its header (tests/test_quickstart.py checks
# that the header still says so): the quickstart's quality is put next to these.
SPEECH_RESULT = {
    "hardware": "2 CPU cores",
    "time": "2 h",
    "scores": "2.01 / 2.49 / 2.97 and STOI 0.883 / 0.915 / 0.936 at 1.5 / 3 / 6 kbps",
    "opus": "2.05 / 2.80 / 3.76",  # PESQ-WB of Opus at 6 / 8 / 12 kbps on the same clips
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--workdir", type=Path, default=Path("quickstart"), help="where everything is written"
    )
    parser.add_argument("--steps", type=int, default=400, help="generator steps to train")
    parser.add_argument(
        "--max-minutes", type=float, default=6.0, help="stop training after this long anyway"
    )
    args = parser.parse_args(argv)
    work: Path = args.workdir
    t0 = time.time()

    from lit_codec.data.prepare import PrepareSettings, prepare_shards

    print(f"[1/3] preparing {REPO / 'data_prep/samples'} -> {work / 'shards'}", flush=True)
    result = prepare_shards(
        [REPO / "data_prep" / "samples"], work / "shards",
        PrepareSettings(valid_fraction=0.1, test_fraction=0.05), progress=False,
    )  # fmt: skip
    print("      " + result.summary(), flush=True)

    from lit_codec.cli import main as cli

    recipe = REPO / "recipes" / "codec" / "debug.yaml"
    start = discriminator_start(recipe)
    max_steps = optimizer_steps(args.steps, start)
    run = work / "run"
    print(
        f"[2/3] training {recipe.relative_to(REPO)} for {args.steps} generator steps -> {run}\n"
        + textwrap.fill(
            explain_steps(args.steps, start), 100, initial_indent=" " * 6, subsequent_indent=" " * 6
        ),
        flush=True,
    )
    minutes = int(args.max_minutes)
    started = time.time()
    cli([
        "fit", "--config", str(recipe), "--data.root", str(work / "shards"),
        "--trainer.default_root_dir", str(run), "--trainer.max_steps", str(max_steps),
        "--model.init_args.discriminator_start_step", str(start),  # what max_steps assumed
        "--trainer.max_time", f"00:00:{minutes:02d}:{int((args.max_minutes - minutes) * 60):02d}",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"
    print("      " + _trained(ckpt, args.steps, time.time() - started), flush=True)

    index = json.loads((work / "shards" / "index.json").read_text())
    clip = _a_test_clip(work / "shards", index)
    out = work / "out"
    print(f"[3/3] encoding and decoding {clip} -> {out}", flush=True)
    codes, recon = out / "clip.npz", out / "clip_decoded.wav"
    cli(["encode", "--ckpt", str(ckpt), "--input", str(clip), "--output", str(codes)])
    cli(["decode", "--ckpt", str(ckpt), "--input", str(codes), "--output", str(recon)])

    scores = _scores(clip, recon)
    shipped = out / "clip_speech16k.wav"
    shipped_codes = out / "clip_speech16k.npz"
    cli(["encode", "--ckpt", "speech16k", "--input", str(clip), "--output", str(shipped_codes)])
    cli(["decode", "--ckpt", "speech16k", "--input", str(shipped_codes), "--output", str(shipped)])
    shipped_scores = _scores(clip, shipped)
    print()
    print(f"quickstart done in {(time.time() - t0) / 60:.1f} min:")
    print(
        f"  shards      {work / 'shards'} ({sum(s['num_samples'] for s in index['splits'].values())} clips)"
    )
    print(f"  checkpoint  {ckpt}")
    print(f"  metrics     {next(run.rglob('metrics.csv'), run)}")
    print(f"  codes       {codes}")
    print(f"  decoded     {recon}  ({scores})")
    print(
        textwrap.fill(
            QUALITY_NOTE, 100, initial_indent="  quality     ", subsequent_indent=" " * 14
        )
    )
    print(f"  shipped     {shipped}  ({shipped_scores}, 6 kbps)")
    print(
        textwrap.fill(
            shipped_note(), 100, initial_indent="  speech16k   ", subsequent_indent=" " * 14
        )
    )
    print(
        f"  next        {lit_codec_command()} fit --config {SPEECH_RECIPE} --data.root YOUR_SHARDS"
    )


def discriminator_start(recipe: Path) -> int:
    """The recipe's ``model.init_args.discriminator_start_step`` (generator steps; the
    recipes it ``extends`` included), 0 when none sets it."""
    from lit_codec.cli import recipe_chain

    start = 0
    for _, content in recipe_chain(recipe):
        init = ((content.get("model") or {}).get("init_args")) or {}
        start = int(init.get("discriminator_start_step", start))
    return start


def optimizer_steps(generator_steps: int, start: int) -> int:
    """Lightning's ``trainer.max_steps`` for ``generator_steps`` generator steps: with
    manual optimisation ``trainer.global_step`` counts every optimizer step, the generator's
    and, from generator step ``start`` on, the discriminator's too."""
    return generator_steps + max(0, generator_steps - start)


def explain_steps(generator_steps: int, start: int) -> str:
    """The line that relates the quickstart's step count to Lightning's ``max_steps``."""
    total = optimizer_steps(generator_steps, start)
    return (
        f"{generator_steps} generator steps = {total} optimizer steps (Lightning's max_steps={total} "
        f"counts both networks' updates: {generator_steps} of the generator, "
        f"{total - generator_steps} of the discriminator, which starts at generator step {start})"
    )


def _trained(ckpt: Path, asked: int, seconds: float) -> str:
    """What the run did, from its last checkpoint: generator and optimizer steps, time."""
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    done, total = state["lit_codec"]["generator_step"], state["global_step"]
    line = f"trained {done} generator steps = {total} optimizer steps in {seconds / 60:.1f} min"
    return line + (" (stopped by --max-minutes)" if done < asked else "")


QUALITY_NOTE = (
    "poor, as expected (garbled speech): a tiny codec trained for a few minutes is a smoke test "
    f"of the pipeline, not a codec. The speech recipe ({SPEECH_RECIPE}) reaches "
    f"PESQ-WB {SPEECH_RESULT['scores']} after {SPEECH_RESULT['time']} on "
    f"{SPEECH_RESULT['hardware']} (Opus at 6 / 8 / 12 kbps: PESQ-WB {SPEECH_RESULT['opus']}), "
    "Opus 8 kbps quality at 6 kbps within two hours of training."
)


def shipped_note() -> str:
    """What the shipped ``speech16k`` codec is and reached, from its model card."""
    from lit_codec.pretrained import card

    info = card("speech16k")
    return (
        f"the codec the package ships (`--ckpt speech16k`, the default of encode/decode/"
        f"evaluate; `lit-codec info speech16k`): {info.get('training', 'see its model card')}; "
        f"{info.get('summary', '')} Report: {info.get('report', 'docs/speech16k_report.md')}."
    )


def lit_codec_command() -> str:
    """``lit-codec`` as it can be typed here: the bare name when it is on PATH, else the
    console script beside this Python (relative to the working folder when under it), else
    ``python -m lit_codec.cli``."""
    script = Path(sys.executable).parent / ("lit-codec.exe" if os.name == "nt" else "lit-codec")
    on_path = shutil.which("lit-codec")
    if script.is_file():
        if on_path and os.path.samefile(on_path, script):
            return "lit-codec"
        return shlex.quote(_from_here(script))
    return f"{shlex.quote(_from_here(Path(sys.executable)))} -m lit_codec.cli"


def _from_here(path: Path) -> str:
    """``path`` relative to the working folder when it lies under it (symlinks kept), with
    a ``/`` in it so that a shell does not search PATH for it."""
    try:
        relative = path.absolute().relative_to(Path.cwd())
    except ValueError:
        return str(path.absolute())
    return str(relative) if len(relative.parts) > 1 else f".{os.sep}{relative}"


def _a_test_clip(shards: Path, index: dict) -> Path:
    """A speech clip held out of training (from the test split), as its original file."""
    import io
    import tarfile

    for split in ("test", "valid"):
        for name in index["splits"].get(split, {}).get("shards", []):
            with tarfile.open(shards / name) as tar:
                for member in tar.getmembers():
                    if member.name.endswith(".json"):
                        meta = json.load(io.BytesIO(tar.extractfile(member).read()))
                        if "/speech/" in meta["source"]:
                            return Path(meta["source"])
    return next((REPO / "data_prep" / "samples" / "speech").rglob("*.flac"))


def _scores(reference: Path, degraded: Path) -> str:
    """PESQ-WB and STOI of the decoded clip (reference packages, 16 kHz)."""
    try:
        import numpy as np
        import soundfile as sf
        from pesq import pesq
        from pystoi import stoi

        ref, rate = sf.read(reference)
        deg, _ = sf.read(degraded)
        n = min(len(ref), len(deg))
        ref, deg = ref[:n].astype(np.float64), deg[:n].astype(np.float64)
        return f"PESQ-WB {pesq(rate, ref, deg, 'wb'):.2f}, STOI {stoi(ref, deg, rate):.3f}"
    except Exception as e:  # a score is a bonus here, never a failure
        return f"scores unavailable: {e}"


if __name__ == "__main__":
    main()
