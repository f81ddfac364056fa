"""``make quickstart``: the main job, end to end, on the audio the repository ships.

1. prepare ``data_prep/samples`` into 16 kHz shards (``<workdir>/shards``);
2. train ``recipes/codec/debug.yaml`` on them for a few minutes (``<workdir>/run``);
3. encode a shipped speech clip to codes and decode it back (``<workdir>/out``);
4. print what it did, the files it wrote and the quality of the reconstruction.

Usage: python -m lit_codec.quickstart [--workdir quickstart] [--steps 400]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


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
    start = 100  # the recipe's discriminator start (generator steps)
    optimizer_steps = min(args.steps, start) + 2 * max(
        0, args.steps - start
    )  # trainer.max_steps counts G and D
    run = work / "run"
    print(
        f"[2/3] training {recipe.relative_to(REPO)} for {args.steps} generator steps -> {run}",
        flush=True,
    )
    minutes = int(args.max_minutes)
    cli([
        "fit", "--config", str(recipe), "--data.root", str(work / "shards"),
        "--trainer.default_root_dir", str(run), "--trainer.max_steps", str(optimizer_steps),
        "--trainer.max_time", f"00:00:{minutes:02d}:{int((args.max_minutes - minutes) * 60):02d}",
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run),
        "--trainer.enable_progress_bar", "false",
    ])  # fmt: skip
    ckpt = run / "checkpoints" / "last.ckpt"

    index = json.loads((work / "shards" / "index.json").read_text())
    clip = _a_test_clip(work / "shards", index)
    out = work / "out"
    print(f"[3/3] encoding and decoding {clip} -> {out}", flush=True)
    codes, recon = out / "clip.npz", out / "clip_decoded.wav"
    cli(["encode", "--ckpt", str(ckpt), "--input", str(clip), "--output", str(codes)])
    cli(["decode", "--ckpt", str(ckpt), "--input", str(codes), "--output", str(recon)])

    scores = _scores(clip, recon)
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
        "  next: lit-codec fit --config recipes/codec/speech_16khz_6kbps.yaml --data.root YOUR_SHARDS"
    )


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
