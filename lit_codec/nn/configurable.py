"""Modules that remember how they were built.

A checkpoint must be loadable for inference without unpickling arbitrary
objects (``torch.load(weights_only=True)``) and without the YAML recipe that
trained it. Every network in :mod:`lit_codec.nn` therefore records its own
constructor arguments; :func:`module_config` turns a module into the same
``{"class_path": ..., "init_args": ...}`` form that jsonargparse uses in the
recipes, and :func:`build_module` turns that form back into a module.

Only plain values (numbers, strings, booleans, ``None``, tuples, lists, dicts)
and other :class:`Configurable` modules may be constructor arguments of a
configurable module, so a config always survives ``weights_only`` loading.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["Configurable", "build_module", "module_config"]

# Only classes from these packages may be built from a checkpoint's config
# unless the caller explicitly trusts it.
TRUSTED_PREFIXES = ("lit_codec.",)


class Configurable:
    """Mixin recording the arguments a module was constructed with.

    Use it before ``nn.Module`` in the bases: ``class SEANetEncoder(Configurable, nn.Module)``.
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        obj = super().__new__(cls)
        bound = inspect.signature(cls.__init__).bind(obj, *args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop(next(iter(arguments)))  # self
        for name, param in inspect.signature(cls.__init__).parameters.items():
            if param.kind is inspect.Parameter.VAR_KEYWORD and name in arguments:
                arguments.update(arguments.pop(name))
        # Bypass nn.Module.__setattr__: the module is not initialised yet.
        obj.__dict__["_init_args"] = arguments
        return obj

    def config(self) -> dict[str, Any]:
        """The ``class_path``/``init_args`` dict this module can be rebuilt from."""
        return module_config(self)


def _plain(value: Any) -> Any:
    if isinstance(value, Configurable):
        return module_config(value)
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(
        f"cannot record constructor argument of type {type(value).__name__}; "
        "configurable modules take plain values or other configurable modules"
    )


def module_config(module: Configurable) -> dict[str, Any]:
    """Return ``{"class_path": ..., "init_args": ...}`` for a configurable module."""
    if not isinstance(module, Configurable):
        raise TypeError(f"{type(module).__name__} does not record its configuration")
    cls = type(module)
    return {
        "class_path": f"{cls.__module__}.{cls.__qualname__}",
        "init_args": _plain(module.__dict__["_init_args"]),
    }


def _is_class_config(value: Any) -> bool:
    return isinstance(value, Mapping) and "class_path" in value


def build_module(config: Mapping[str, Any], trust: bool = False) -> Any:
    """Instantiate a module from a ``class_path``/``init_args`` dict (recursively).

    Args:
        config: the dict, as written by :func:`module_config` or a recipe.
        trust: allow classes outside ``lit_codec``. Only set this for configs
            you wrote yourself: building a class runs its code.
    """
    class_path = str(config["class_path"])
    if not trust and not class_path.startswith(TRUSTED_PREFIXES):
        raise ValueError(
            f"refusing to build {class_path!r} from a config: only lit_codec classes are "
            "built unless trust=True"
        )
    module_name, _, qualname = class_path.rpartition(".")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    init_args = {k: _build_value(v, trust) for k, v in dict(config.get("init_args", {})).items()}
    return obj(**init_args)


def _build_value(value: Any, trust: bool) -> Any:
    if _is_class_config(value):
        return build_module(value, trust)
    if isinstance(value, Mapping):
        return {k: _build_value(v, trust) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, str):
        built = [_build_value(v, trust) for v in value]
        return tuple(built) if isinstance(value, tuple) else built
    return value
