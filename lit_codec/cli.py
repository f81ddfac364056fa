"""The ``lit-codec`` command.

Training (LightningCLI):
    lit-codec fit      --config recipes/codec/debug.yaml [--data.root DIR] [--trainer.max_steps N]
    lit-codec validate --config ... --ckpt_path C
    lit-codec test     --config ... --ckpt_path C
    lit-codec predict  --config ... --ckpt_path C

Inference:
    lit-codec encode --ckpt C --input a.wav --output a.npz [--kbps 3 | --n-q 6] [--chunk-ms 20] [--threads 1]
    lit-codec decode --ckpt C --input a.npz --output b.wav [--threads 1]
    lit-codec export --ckpt C --output codec.safetensors [--weights int4]
    lit-codec export --ckpt C --format onnx --output DIR [--kbps 3 | --n-q 6]
    lit-codec info   [C | --ckpt C]

``--ckpt`` defaults to the shipped codec ``speech16k`` (lit_codec/pretrained).

Codec language model:
    lit-codec fit-kmeans --input CLIPS_OR_SHARDS --output km.safetensors --k 100
    lit-codec tokens     --input TOKEN_SHARDS [--task se] [--count 5] [--json]
    lit-codec generate   --ckpt LM [--codec C] --task se --input noisy.wav --output clean.wav
    lit-codec evaluate-lm --ckpt LM --task se --input CLEAN_CLIPS --output REPORT_DIR [--noise DIR] [--tokens TOKENS]

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

import sys

from lit_codec.commands import COMMANDS, command_main
from lit_codec.commands.common import (  # re-exported: scripts and tests import them from here
    add_threads_argument,
    default_threads,
    exit_with,
    set_threads,
)
from lit_codec.commands.lightning import (
    LIGHTNING_COMMANDS,
    expand_recipes,
    print_config_with_derived,
    recipe_chain,
    run_lightning,
)

__all__ = ["add_threads_argument", "default_threads", "expand_recipes", "main", "recipe_chain",
           "run_lightning", "set_threads"]  # fmt: skip

INFERENCE_COMMANDS = ("encode", "decode", "export", "info")
EVALUATION_COMMANDS = ("score", "evaluate")


def __getattr__(name: str):
    if name == "LitCodecCLI":
        from lit_codec.commands.lightning import _make_cli_class

        return _make_cli_class()
    raise AttributeError(name)


_OVERVIEW = """usage: lit-codec COMMAND [options]   (lit-codec COMMAND --help for a command's options)

training and evaluation loops (LightningCLI, configured by recipes):
  fit        train: lit-codec fit --config recipes/codec/debug.yaml [--data.root SHARDS]
  validate   one validation pass of a recipe's model (--ckpt_path to load weights)
  test       one pass over the test split
  predict    encode and decode the test split with a checkpoint (--ckpt_path)

inference (--ckpt C: a checkpoint, an export, or a shipped codec; default: speech16k, no training):
  encode     audio file -> codes (.npz): --input a.wav --output a.npz [--ckpt C] [--kbps 3] [--chunk-ms 20] [--denoise]
  decode     codes (.npz) -> audio file: --input a.npz --output b.wav [--ckpt C]
  export     checkpoint -> .safetensors (weights + configuration, loaded without unpickling;
             --weights int4 for a compact file), or --format onnx: encoder/decoder graphs
             for onnxruntime (--output DIR [--kbps 3])
  info       describe a checkpoint, export or shipped codec: lit-codec info speech16k

codec language model:
  fit-kmeans k-means semantic units on MFCC or HuBERT features: --input CLIPS_OR_SHARDS --output km.safetensors --k 100
  tokens     show the task sequences of token shards, segment by segment: --input TOKENS [--task se] [--count 5] [--json]
  generate   a task's target audio from a CodecLM: --ckpt LM --task se --input noisy.wav --output clean.wav
  evaluate-lm  a CodecLM on held-out clips: generated vs degraded input vs the codec's ceiling
             (PESQ, STOI, ESTOI, SI-SDR, token accuracy): --ckpt LM --task se --input CLEAN --output DIR

quality:
  evaluate   rate-distortion report of a codec over clips (PESQ, STOI, ViSQOL, ...; --baseline opus)
  score      score degraded audio against references (files, or two folders paired by name)

exit status: 0 done; 1 failed while running (score, evaluate: done but for inputs named on
stderr); 2 bad arguments or an input of the wrong kind, nothing done

recipes: recipes/README.md; data preparation: python data_prep/make_audio_shards.py --help
"""


def main(args: list[str] | None = None):
    """Entry point of the ``lit-codec`` console script: dispatch to the command's module."""
    args = list(sys.argv[1:] if args is None else args)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_OVERVIEW, end="")
        if not args:
            raise SystemExit(2)  # a command is required
        return None
    if args[0] in COMMANDS:
        code = command_main(args[0])(args[1:])
        if code:
            raise SystemExit(code)
        return None
    if args[0] not in LIGHTNING_COMMANDS and not args[0].startswith("-"):
        known = LIGHTNING_COMMANDS + tuple(COMMANDS)
        exit_with(f"lit-codec: unknown command {args[0]!r}; use one of {', '.join(known)}", 2)
    expanded = expand_recipes(args)
    if any(a.startswith("--print_config") for a in expanded):
        print_config_with_derived(expanded)
        return None
    run_lightning(expanded)
    return None


if __name__ == "__main__":
    main()
