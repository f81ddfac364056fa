"""Import EnCodec without torchaudio, for the benchmarks only.

The ``encodec`` package (installed with ``pip install --no-deps encodec``) imports
torchaudio at module level, but only its audio I/O, resampling and spectrogram helpers use
it, and the benchmarks call none of them. :func:`import_encodec` puts an empty stand-in
module in ``sys.modules`` when torchaudio is not installed; touching any of its attributes
raises a clear error instead of silently doing something else.
"""

from __future__ import annotations

import importlib.util
import sys
import types


class _TorchaudioStandIn(types.ModuleType):
    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"torchaudio.{name} was used, but torchaudio is a stand-in here: the benchmarks "
            "must only call EnCodec's networks, not its audio helpers"
        )


def import_encodec() -> types.ModuleType:
    """Return the ``encodec`` package, with a torchaudio stand-in if torchaudio is missing."""
    if "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is None:
        sys.modules["torchaudio"] = _TorchaudioStandIn("torchaudio")
    import encodec

    return encodec
