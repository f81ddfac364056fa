import os

import pytest
import torch

# Two cores: torch's default threading collapses when tests start processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def sample_shards(tmp_path_factory):
    """The shipped samples prepared into 16 kHz shards (once per test session)."""
    from pathlib import Path

    from lit_codec.data.prepare import PrepareSettings, prepare_shards

    out = tmp_path_factory.mktemp("sample_shards")
    samples = Path(__file__).resolve().parents[1] / "data_prep" / "samples"
    prepare_shards(
        [samples], out, PrepareSettings(valid_fraction=0.1, test_fraction=0.05), progress=False
    )
    return out
