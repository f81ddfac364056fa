"""``lit-codec export``: checkpoint -> .safetensors (float32 or compact) or ONNX graphs."""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_codec.commands.common import CKPT_HELP, DEFAULT_CODEC, run_guarded

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The options of ``lit-codec export``."""
    exp = argparse.ArgumentParser(
        prog="lit-codec export",
        description="checkpoint -> .safetensors (weights + configuration) or ONNX graphs",
    )
    exp.add_argument("--ckpt", default=DEFAULT_CODEC, help=CKPT_HELP)
    exp.add_argument(
        "--output",
        required=True,
        help=".safetensors file to write, or with --format onnx the folder to write the graphs into",
    )
    exp.add_argument(
        "--format",
        choices=("safetensors", "onnx"),
        default="safetensors",
        help="safetensors (default): weights + configuration, loaded by lit-codec; onnx: "
        "encoder.onnx, decoder.onnx (+ streaming steps of a causal ConvNeXt codec) and "
        "codec.json, run by onnxruntime (lit_codec.onnx_runtime.OnnxCodec)",
    )
    onnx_rate = exp.add_mutually_exclusive_group()
    onnx_rate.add_argument(
        "--kbps",
        type=float,
        default=None,
        help="--format onnx: the largest n_q within this bitrate",
    )
    onnx_rate.add_argument(
        "--n-q",
        type=int,
        default=None,
        help="--format onnx: codebooks the graphs use (default: all)",
    )
    exp.add_argument(
        "--opset",
        type=int,
        default=None,
        help="--format onnx: ONNX opset, 17 (default) to 20",
    )
    exp.add_argument(
        "--weights",
        choices=("float32", "int8", "int4"),
        default="float32",
        help="safetensors: float32 (default, exact) or compact int8 / int4 weights (about 4x / "
        "6x smaller; how the shipped speech16k is stored)",
    )
    exp.add_argument("--device", default="cpu")
    return exp


def run(a: argparse.Namespace) -> None:
    """Export ``a.ckpt`` as ``a.format`` into ``a.output``."""
    from lit_codec.codec import Codec

    if a.format == "onnx":
        _export_onnx(a)
        return
    given = [flag for flag, value in (("--kbps", a.kbps), ("--n-q", a.n_q), ("--opset", a.opset))
             if value is not None]  # fmt: skip
    if given:
        raise ValueError(
            f"{', '.join(given)} apply to --format onnx; a .safetensors export holds the whole codec"
        )
    codec = Codec.from_checkpoint(a.ckpt, map_location=a.device)
    path = codec.export(a.output, weights=a.weights)
    size = path.stat().st_size / 1e6
    if a.weights == "float32":
        print(f"exported codec {codec.fingerprint} to {path} ({size:.1f} MB)")
    else:
        exported = Codec.from_checkpoint(path)
        print(f"exported codec {codec.fingerprint} with {a.weights} weights to {path} "
              f"({size:.1f} MB); loads as codec {exported.fingerprint}")  # fmt: skip


def _export_onnx(a) -> None:
    from lit_codec.codec import Codec
    from lit_codec.onnx_export import DEFAULT_OPSET, export_onnx

    out = Path(a.output)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--output {out} is a file: --format onnx writes a folder of graphs")
    if a.device != "cpu":
        raise ValueError(f"--format onnx exports from the CPU, not --device {a.device}")
    codec = Codec.from_checkpoint(a.ckpt, map_location="cpu")
    n_q = codec.resolve_n_q(a.n_q, a.kbps)
    export = export_onnx(codec, out, n_q=n_q, opset=DEFAULT_OPSET if a.opset is None else a.opset)
    steps = " and streaming steps" if export.encoder_step is not None else ""
    print(
        f"exported codec {codec.fingerprint} to {out}: encoder.onnx, decoder.onnx{steps}, "
        f"{n_q} codebooks ({codec.quantizer.kbps(n_q):g} kbps), opset {export.opset}"
    )




def main(argv: list[str]) -> None:
    """``lit-codec export ARGS``."""
    run_guarded("export", run, parser().parse_args(argv))
