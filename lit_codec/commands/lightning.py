"""``lit-codec fit|validate|test|predict``: LightningCLI over recipes.

Recipes may start with ``extends: base.yaml`` (a path relative to the recipe, or a list of
them): the named recipes are applied first, then this one on top, exactly as if each had
been given with its own ``--config``. The values a codec recipe shares (sample rate, hop,
latent dimension, frame rate) are written once and linked.
"""

from __future__ import annotations

import logging
import math
import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["LIGHTNING_COMMANDS", "expand_recipes", "print_config_with_derived", "recipe_chain",
           "run_lightning"]  # fmt: skip

LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")


def recipe_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
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
        chain.extend(recipe_chain(path.parent / parent, (*seen, path)))
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
        for _, content in recipe_chain(path):
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


def print_config_with_derived(args: list[str]) -> None:
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
