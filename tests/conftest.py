import os
import random
import zlib

import numpy as np
import pytest
import torch

# Two cores: torch's default threading collapses when tests start processes.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)


def _test_seed(nodeid: str) -> int:
    """A seed that depends on the test alone, not on which tests ran before it."""
    return zlib.crc32(nodeid.encode())


@pytest.fixture(autouse=True)
def _seed(request):
    """Seed every global generator per test (torch, numpy, random): any order gives the same draws.

    pytest-randomly shuffles the order in CI and reseeds ``random``/numpy before each test;
    this fixture runs after it, so a test's numbers never depend on the shuffle.
    """
    seed = _test_seed(request.node.nodeid)
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


@pytest.fixture
def generator(request) -> torch.Generator:
    """A torch generator of the test's own, for code that takes ``generator=``."""
    return torch.Generator().manual_seed(_test_seed(request.node.nodeid))


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
