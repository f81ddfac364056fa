"""What the inference and evaluation commands share: threads, the codec argument, exits."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import NoReturn

__all__ = ["CKPT_HELP", "DEFAULT_CODEC", "DENOISE_HELP", "add_threads_argument", "default_threads",
           "exit_with", "run_guarded", "set_threads"]  # fmt: skip

DEFAULT_CODEC = "speech16k"
CKPT_HELP = (
    f"checkpoint (.ckpt), export (.safetensors), sharded checkpoint folder, or the name of a "
    f"shipped codec (default: {DEFAULT_CODEC}, lit_codec/pretrained)"
)
DENOISE_HELP = (
    "turn on the denoising flag of a codec trained with one (recipes/codec/denoise_16khz.yaml); "
    "`lit-codec info` says whether it is read when encoding or when decoding"
)


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



def exit_with(message: str, status: int) -> NoReturn:
    """Print ``message`` on stderr and exit with ``status`` (see ``lit_codec.cli``)."""
    print(message, file=sys.stderr, flush=True)
    raise SystemExit(status)


def run_guarded(name: str, handler: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> None:
    """Run a command; bad arguments or input exit 2 (nothing done), other OS errors exit 1."""
    try:
        handler(args)
    except (ValueError, FileNotFoundError) as e:  # bad arguments or input: nothing done
        exit_with(f"lit-codec {name}: {e}", 2)
    except OSError as e:  # writing the output, reading a device: failed while running
        exit_with(f"lit-codec {name}: {e}", 1)
