"""Audio and token data: shard preparation, WebDataset pipelines, LightningDataModules.

Names are imported lazily so that data preparation scripts do not pay for
importing Lightning.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "AudioBatch": "lit_codec.data.audio_dataset",
    "AudioShardDataModule": "lit_codec.data.audio_datamodule",
    "PrepareSettings": "lit_codec.data.prepare",
    "prepare_shards": "lit_codec.data.prepare",
    "TokenBatch": "lit_codec.data.token_batch",
    "TokenShardDataModule": "lit_codec.data.token_datamodule",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'lit_codec.data' has no attribute {name!r}")
