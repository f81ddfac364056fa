"""The commands of ``lit-codec`` other than LightningCLI's, one module each.

Each module has ``main(argv: list[str])``, which parses its own options, and raises
``SystemExit`` with the status of ``lit_codec.cli``'s docstring. :data:`COMMANDS` maps a
command's name to its module and its one-line summary; ``lit_codec.cli`` only dispatches.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

__all__ = ["COMMANDS", "command_main"]

#: name -> "module:function" under lit_codec; the function takes the arguments after the name
COMMANDS: dict[str, str] = {
    "encode": "commands.encode:main",
    "decode": "commands.decode:main",
    "export": "commands.export:main",
    "info": "commands.info:main",
    "fit-kmeans": "commands.fit_kmeans:main",
    "tokens": "commands.tokens:main",
    "generate": "commands.generate:main",
    "score": "scoring:score_main",
    "evaluate": "evaluate:evaluate_main",
    "evaluate-lm": "evaluate_lm:evaluate_lm_main",
}


def command_main(name: str) -> Callable[[list[str]], int | None]:
    """The entry function of command ``name`` (imported on demand: ``--help`` stays fast)."""
    module, function = COMMANDS[name].split(":")
    return getattr(importlib.import_module(f"lit_codec.{module}"), function)
