"""The ``lit-codec`` command.

Training (LightningCLI):
    lit-codec fit      --config recipes/codec/debug.yaml [--data.root DIR] [--trainer.max_steps N]
    lit-codec validate --config ... --ckpt_path C
    lit-codec test     --config ... --ckpt_path C
    lit-codec predict  --config ... --ckpt_path C

Inference:
    lit-codec encode --ckpt C --input a.wav --output a.npz [--kbps 3 | --n-q 6] [--chunk-ms 20] [--threads 1]
    lit-codec decode --ckpt C --input a.npz --output b.wav [--threads 1]
    lit-codec export --ckpt C --output codec.safetensors
    lit-codec export --ckpt C --format onnx --output DIR [--kbps 3 | --n-q 6]
    lit-codec info   --ckpt C

Evaluation:
    lit-codec score    --reference R --degraded D [--metrics pesq,stoi,...] [--json]
    lit-codec evaluate --ckpt C --input DIR_OR_SHARDS --kbps 1.5,3,6 --output REPORT_DIR [--baseline opus]

Recipes may start with ``extends: base.yaml`` (a path relative to the recipe, or a
list of them): the named recipes are applied first, then this one on top, exactly
as if each had been given with its own ``--config``.

Exit status of the inference and evaluation commands (README.md, "Exit status"):
0 done; 1 failed while running, or (``score``, ``evaluate``) done except for some inputs,
each named on stderr; 2 nothing done: bad arguments or an input file of the wrong kind
(the message names the file, what it looks like and what was expected); 130 interrupted.

``encode``, ``decode``, ``score`` and ``evaluate`` run torch on ``--threads`` threads
(default 1, or ``OMP_NUM_THREADS`` when set): on a small shared machine more threads make
chunked coding many times slower, not faster.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any, NoReturn

import yaml

__all__ = ["add_threads_argument", "expand_recipes", "main", "run_lightning", "set_threads"]

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")
INFERENCE_COMMANDS = ("encode", "decode", "export", "info")
EVALUATION_COMMANDS = ("score", "evaluate")


# --------------------------------------------------------------------------- recipes
def _recipe_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    path = path.resolve()
    if path in seen:
        raise ValueError(f"recipe loop: {' -> '.join(str(p) for p in (*seen, path))}")
    with open(path, encoding="utf-8") as f:
        content = yaml.safe_load(f) or {}
    if not isinstance(content, dict):
        raise ValueError(f"{path} is not a YAML mapping")
    parents = content.pop("extends", None)
    chain: list[tuple[Path, dict[str, Any]]] = []
    for parent in [parents] if isinstance(parents, str) else parents or []:
        chain.extend(_recipe_chain(path.parent / parent, (*seen, path)))
    chain.append((path, content))
    return chain


def expand_recipes(args: list[str]) -> list[str]:
    """Replace ``--config recipe.yaml`` whose recipe ``extends`` others by the whole chain."""
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        value = None
        if arg in ("--config", "-c") and i + 1 < len(args):
            value, i = args[i + 1], i + 2
        elif arg.startswith("--config="):
            value, i = arg.split("=", 1)[1], i + 1
        else:
            out.append(arg)
            i += 1
            continue
        path = Path(value)
        try:
            is_recipe_file = path.is_file() and _has_extends(path)
        except OSError:  # a YAML string given to --config (too long to be a file name)
            is_recipe_file = False
        if not is_recipe_file:
            out += ["--config", value]
            continue
        for _, content in _recipe_chain(path):
            out += ["--config", yaml.safe_dump(content, sort_keys=False) if content else "{}"]
    return out


def _has_extends(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            content = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(content, dict) and "extends" in content


# --------------------------------------------------------------------------- LightningCLI
def _hop(generator) -> int:
    """Samples per frame of a generator's config: the product of its ``strides`` (SEANet)
    or its ``hop_length`` (frame-rate generators such as ``ConvNeXtGenerator``)."""
    init = generator.get("init_args") or {}
    if init.get("strides") is not None:
        return int(math.prod(init.get("strides")))
    if init.get("hop_length") is not None:
        return int(init.get("hop_length"))
    raise ValueError(f"{generator.get('class_path')}: a generator needs `strides` or `hop_length`")


def _frame_rate(sample_rate, generator) -> float:
    return float(sample_rate) / _hop(generator)


def _make_cli_class():
    from lightning.pytorch.cli import LightningCLI

    class LitCodecCLI(LightningCLI):
        """LightningCLI with the values a codec recipe shares written once and linked."""

        def add_arguments_to_parser(self, parser) -> None:
            gen = "model.init_args.generator"
            parser.link_arguments("model.init_args.sample_rate", "data.init_args.sample_rate")
            parser.link_arguments(gen, "data.init_args.hop_length", compute_fn=_hop)
            parser.link_arguments(
                f"{gen}.init_args.dimension", "model.init_args.quantizer.init_args.dim"
            )
            parser.link_arguments(
                ("model.init_args.sample_rate", gen),
                "model.init_args.quantizer.init_args.frame_rate",
                compute_fn=_frame_rate,
            )
            parser.link_arguments(
                "model.init_args.sample_rate", "model.init_args.mel_loss.init_args.sample_rate"
            )

        def before_instantiate_classes(self) -> None:
            # a logger without its own folder writes into the run's folder
            config = (
                self.config.get(self.subcommand, self.config) if self.subcommand else self.config
            )
            trainer = config.get("trainer")
            loggers = trainer.get("logger") if trainer is not None else None
            for logger in loggers if isinstance(loggers, list) else [loggers]:
                init = getattr(logger, "init_args", None)
                if init is not None and "save_dir" in init and init.save_dir in (None, ".", "./"):
                    init.save_dir = trainer.get("default_root_dir") or "."

        def before_fit(self) -> None:
            describe = getattr(self.model, "describe", None)
            if describe is not None and self.trainer.is_global_zero:
                print(describe(), flush=True)
            # the full resolved config, so dashboards can filter and compare runs by any key
            config = self.config[self.subcommand].clone()
            for logger in self.trainer.loggers:
                logger.log_hyperparams(_flatten(config.as_dict()))

    return LitCodecCLI


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """``{"model": {"init_args": {"lr": 1}}} -> {"model.lr": 1}`` (``init_args`` levels dropped)."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            name = prefix if key == "init_args" else (f"{prefix}.{key}" if prefix else str(key))
            out.update(_flatten(value, name))
    elif isinstance(tree, (list, tuple)) and any(isinstance(v, dict) for v in tree):
        for i, value in enumerate(tree):
            out.update(_flatten(value, f"{prefix}.{i}"))
    else:
        out[prefix] = list(tree) if isinstance(tree, tuple) else tree
    return out


def __getattr__(name: str):
    if name == "LitCodecCLI":
        return _make_cli_class()
    raise AttributeError(name)


def _drop_litlogger_tip(record: logging.LogRecord) -> bool:
    return "litlogger" not in str(record.msg)


def run_lightning(args: list[str], run: bool = True):
    import warnings

    import lightning as L
    import torch

    # `main` always hands its arguments over explicitly; Lightning warns about that.
    warnings.filterwarnings("ignore", message=r".*LightningCLI's args parameter is intended.*")
    # Lightning's own pytree helper on PyTorch >= 2.13: not actionable for users.
    warnings.filterwarnings(
        "ignore", message=r".*isinstance\(treespec, LeafSpec\)` is deprecated.*"
    )
    # LightningCLI's own calls of APIs jsonargparse deprecated (add_instantiator, skip_none,
    # instantiate_classes); ours make none. `python -W default` shows them again.
    if not sys.warnoptions:
        warnings.filterwarnings(
            "ignore", category=DeprecationWarning, module=r"lightning\.pytorch\.cli"
        )
    # Lightning's advertisement for its cloud logger, printed by every run
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(_drop_litlogger_tip)
    # denormal floats (tiny activations late in training) are 10-100x slower on CPUs
    torch.set_flush_denormal(True)

    cli_class = _make_cli_class()
    return cli_class(
        L.LightningModule,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
    )


def _print_config_with_derived(args: list[str]) -> None:
    """``--print_config``, followed by the numbers the config implies (as YAML comments)."""
    try:
        run_lightning(args)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    rest = [a for a in args if not a.startswith("--print_config")]
    if rest and rest[0] in LIGHTNING_COMMANDS:
        rest = rest[1:]
    cli = run_lightning(rest, run=False)
    describe = getattr(cli.model, "describe", None)
    if describe is not None:
        print("# derived: " + describe())


# --------------------------------------------------------------------------- threads
def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return n


def add_threads_argument(parser: argparse.ArgumentParser, per: str = "") -> None:
    """Add ``--threads N`` (torch threads; see :func:`set_threads`) to a command's parser."""
    parser.add_argument(
        "--threads",
        type=_positive_int,
        default=None,
        metavar="N",
        help=f"torch threads{per} (default: 1, or OMP_NUM_THREADS when set). More pay only "
        "for long files coded offline on idle cores: on a busy 2-core machine 20 ms chunks "
        "ran 5-95x slower on 2 threads than on 1 (README.md)",
    )


def default_threads() -> int:
    """``OMP_NUM_THREADS`` when set to a whole number >= 1, else 1."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    return int(env) if env.isdigit() and int(env) >= 1 else 1


def set_threads(threads: int | None) -> int:
    """Run torch's operators on ``threads`` threads (None: :func:`default_threads`)."""
    import torch

    n = default_threads() if threads is None else int(threads)
    torch.set_num_threads(n)
    return n


# --------------------------------------------------------------------------- inference commands
def _inference_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lit-codec", description="lit-codec inference commands")
    sub = p.add_subparsers(dest="command", required=True)
    enc = sub.add_parser("encode", help="audio file -> codes (.npz)")
    enc.add_argument("--ckpt", required=True, help="checkpoint (.ckpt) or export (.safetensors)")
    enc.add_argument(
        "--input", required=True, help="audio file (any format, rate and channel count)"
    )
    enc.add_argument("--output", required=True, help=".npz file to write")
    rate = enc.add_mutually_exclusive_group()
    rate.add_argument(
        "--kbps", type=float, default=None, help="target bitrate (the largest n_q within it)"
    )
    rate.add_argument("--n-q", type=int, default=None, help="number of codebooks")
    enc.add_argument(
        "--chunk-ms",
        type=float,
        default=None,
        help="encode through the streaming path in chunks of this size",
    )
    denoise_help = (
        "turn on the denoising flag of a codec trained with one (recipes/codec/denoise_16khz.yaml); "
        "`lit-codec info` says whether it is read when encoding or when decoding"
    )
    enc.add_argument("--denoise", action="store_true", help=denoise_help)
    dec = sub.add_parser("decode", help="codes (.npz) -> audio file")
    dec.add_argument("--ckpt", required=True)
    dec.add_argument("--input", required=True, help=".npz written by `lit-codec encode`")
    dec.add_argument(
        "--output", required=True, help="audio file to write (format from the extension)"
    )
    dec.add_argument(
        "--chunk-ms", type=float, default=None, help="decode through the streaming path"
    )
    dec.add_argument("--denoise", action="store_true", help=denoise_help)
    exp = sub.add_parser(
        "export", help="checkpoint -> .safetensors (weights + configuration) or ONNX graphs"
    )
    exp.add_argument("--ckpt", required=True)
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
    info = sub.add_parser("info", help="describe a codec checkpoint")
    info.add_argument("--ckpt", required=True)
    for sp in (enc, dec, exp, info):
        sp.add_argument("--device", default="cpu")
    for sp in (enc, dec):
        add_threads_argument(sp)
    return p


def _encode(a) -> None:
    import numpy as np
    import torch

    from lit_codec.codec import Codec, load_audio

    set_threads(a.threads)
    codec = Codec.from_checkpoint(a.ckpt, map_location=a.device)
    wav = load_audio(a.input, codec.sample_rate)
    n_q = codec.resolve_n_q(a.n_q, a.kbps)
    if a.chunk_ms:
        chunk = max(1, int(round(a.chunk_ms * codec.sample_rate / 1000)))
        parts = []
        with codec.streaming(n_q=n_q, denoise=a.denoise) as stream:
            for start in range(0, len(wav), chunk):
                parts.append(stream.encode(wav[start : start + chunk]))
            parts.append(stream.flush())
        codes = torch.cat(parts, dim=-1)[0]  # (n_q, frames)
    else:
        codes = codec.encode(wav, n_q=n_q, denoise=a.denoise)[0]  # (n_q, frames)
    dtype = np.int16 if codec.codebook_size <= 32768 else np.int32
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        codes=codes.cpu().numpy().astype(dtype),
        sample_rate=np.int64(codec.sample_rate),
        frame_rate=np.float64(codec.frame_rate),
        hop_length=np.int64(codec.hop_length),
        n_q=np.int64(n_q),
        codebook_size=np.int64(codec.codebook_size),
        num_samples=np.int64(len(wav)),
        kbps=np.float64(codec.quantizer.kbps(n_q)),
        fingerprint=np.str_(codec.fingerprint),
        denoised=np.bool_(a.denoise),  # the codes are of the clean estimate
    )
    print(
        f"encoded {a.input} ({len(wav) / codec.sample_rate:.2f} s) -> {out}: {codes.shape[1]} frames x {n_q} codebooks, "
        f"{codec.quantizer.kbps(n_q):g} kbps"
        + (f", streamed in {a.chunk_ms:g} ms chunks" if a.chunk_ms else "")
        + (", denoised" if a.denoise else "")
    )


def _decode(a) -> None:
    import numpy as np
    import soundfile as sf
    import torch

    from lit_codec.codec import Codec

    set_threads(a.threads)
    out = Path(a.output)
    if out.suffix.lstrip(".").upper() not in sf.available_formats():
        raise ValueError(
            f"--output {out}: the extension names no audio format soundfile writes "
            "(use .wav, .flac, .ogg, ...)"
        )
    codes, fingerprint, num_samples = _read_codes(a.input)
    codec = Codec.from_checkpoint(a.ckpt, map_location=a.device)
    if fingerprint != codec.fingerprint:
        raise ValueError(
            f"{a.input} was encoded by codec {fingerprint}, but {a.ckpt} is codec "
            f"{codec.fingerprint}; decode it with the checkpoint that encoded it"
        )
    codes_t = torch.from_numpy(codes.astype(np.int64))[None]  # (1, n_q, F)
    if a.chunk_ms:
        frames = max(1, int(round(a.chunk_ms * codec.frame_rate / 1000)))
        with codec.streaming(n_q=codes_t.shape[1], denoise=a.denoise) as stream:
            audio = torch.cat(
                [
                    stream.decode(codes_t[..., i : i + frames])
                    for i in range(0, codes_t.shape[-1], frames)
                ],
                -1,
            )
    else:
        audio = codec.decode(codes_t, denoise=a.denoise)
    audio = audio[0, 0, :num_samples].cpu().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, np.clip(audio, -1, 1), codec.sample_rate)
    print(
        f"decoded {a.input} -> {out}: {len(audio) / codec.sample_rate:.2f} s at {codec.sample_rate} Hz"
    )


CODES_KEYS = ("codes", "fingerprint", "num_samples")  # what decoding needs of an .npz


def _read_codes(path: str) -> tuple[Any, str, int]:
    """``(codes (n_q, frames), fingerprint, num_samples)`` of an .npz written by ``encode``;
    a ``ValueError`` that names the file, what it looks like and what was expected otherwise
    (never by unpickling: NumPy object arrays are refused)."""
    import numpy as np

    from lit_codec.sniff import KINDS, file_kind

    expected = "expected an .npz written by `lit-codec encode`"
    kind = file_kind(path)
    if kind == "missing":
        raise FileNotFoundError(f"{path} does not exist ({expected})")
    if kind != "npz":
        raise ValueError(f"{path} looks like {KINDS[kind]}, not codes: {expected}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in CODES_KEYS if k in data.files}
    except Exception:  # object arrays (NumPy would unpickle them), damaged members
        raise ValueError(
            f"{path} is a NumPy .npz archive whose arrays cannot be read as codes "
            f"(lit-codec writes plain arrays and never unpickles): {expected}"
        ) from None
    missing = [k for k in CODES_KEYS if k not in arrays]
    if missing:
        raise ValueError(
            f"{path} is a NumPy .npz archive without {', '.join(missing)}, not codes: {expected}"
        )
    codes, fingerprint = arrays["codes"], str(arrays["fingerprint"])
    num_samples = int(arrays["num_samples"])
    if codes.ndim != 2 or codes.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: 'codes' is a {codes.dtype} array of shape {codes.shape}, not "
            f"(codebooks, frames) integers: {expected}"
        )
    return codes, fingerprint, num_samples


def _export(a) -> None:
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
    path = codec.export(a.output)
    print(f"exported codec {codec.fingerprint} to {path}")


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


def _info(a) -> None:
    from lit_codec.codec import Codec

    codec = Codec.from_checkpoint(a.ckpt, map_location=a.device)
    n_params = sum(p.numel() for p in codec.parameters())
    rates = ", ".join(f"{k:g}" for k in codec.bitrates())
    print(
        f"codec {codec.fingerprint}: {codec.sample_rate} Hz, hop {codec.hop_length} -> {codec.frame_rate:g} frames/s, "
        f"{codec.n_q} x {codec.codebook_size} codes; bitrates (kbps): {rates}; {n_params / 1e6:.2f} M parameters"
        + (
            f"; denoises on request (`lit-codec {codec.denoises_at} --denoise`)"
            if codec.denoises_at
            else ""
        )
    )


_OVERVIEW = """usage: lit-codec COMMAND [options]   (lit-codec COMMAND --help for a command's options)

training and evaluation loops (LightningCLI, configured by recipes):
  fit        train: lit-codec fit --config recipes/codec/debug.yaml [--data.root SHARDS]
  validate   one validation pass of a recipe's model (--ckpt_path to load weights)
  test       one pass over the test split
  predict    encode and decode the test split with a checkpoint (--ckpt_path)

inference:
  encode     audio file -> codes (.npz): --ckpt C --input a.wav --output a.npz [--kbps 3] [--chunk-ms 20] [--denoise]
  decode     codes (.npz) -> audio file: --ckpt C --input a.npz --output b.wav
  export     checkpoint -> .safetensors (weights + configuration, loaded without unpickling),
             or --format onnx: encoder/decoder graphs for onnxruntime (--output DIR [--kbps 3])
  info       describe a checkpoint or export (rates, codebooks, bitrates, fingerprint)

quality:
  evaluate   rate-distortion report of a codec over clips (PESQ, STOI, ViSQOL, ...; --baseline opus)
  score      score degraded audio against references (files, or two folders paired by name)

exit status: 0 done; 1 failed while running (score, evaluate: done but for inputs named on
stderr); 2 bad arguments or an input of the wrong kind, nothing done

recipes: recipes/README.md; data preparation: python data_prep/make_audio_shards.py --help
"""


def _exit(message: str, status: int) -> NoReturn:
    """Print ``message`` on stderr and exit with ``status`` (see the module docstring)."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(status)


def main(args: list[str] | None = None):
    """Entry point of the ``lit-codec`` console script."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_OVERVIEW, end="")
        if not args:
            raise SystemExit(2)  # a command is required
        return None
    if args and args[0] in EVALUATION_COMMANDS:
        if args[0] == "score":
            from lit_codec.scoring import score_main as command
        else:
            from lit_codec.evaluate import evaluate_main as command
        code = command(args[1:])
        if code:
            raise SystemExit(code)
        return None
    if args and args[0] in INFERENCE_COMMANDS:
        parsed = _inference_parser().parse_args(args)
        handler = {"encode": _encode, "decode": _decode, "export": _export, "info": _info}[
            parsed.command
        ]
        try:
            handler(parsed)
        except (ValueError, FileNotFoundError) as e:  # bad arguments or input: nothing done
            _exit(f"lit-codec {parsed.command}: {e}", 2)
        except OSError as e:  # writing the output, reading a device: failed while running
            _exit(f"lit-codec {parsed.command}: {e}", 1)
        return None
    if args and args[0] not in LIGHTNING_COMMANDS and not args[0].startswith("-"):
        known = LIGHTNING_COMMANDS + INFERENCE_COMMANDS + EVALUATION_COMMANDS
        _exit(f"lit-codec: unknown command {args[0]!r}; use one of {', '.join(known)}", 2)
    expanded = expand_recipes(args)
    if any(a.startswith("--print_config") for a in expanded):
        _print_config_with_derived(expanded)
        return None
    run_lightning(expanded)
    return None


if __name__ == "__main__":
    main()
