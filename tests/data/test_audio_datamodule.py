import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import soundfile as sf
import torch

from lit_codec.data import AudioBatch, AudioShardDataModule
from lit_codec.data.prepare import PrepareSettings, prepare_shards

from .corpus_factory import tone

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory):
    """23 clips of varied length in 5 train shards of unequal size (4,4,4,4,... at 16 kHz)."""
    root = tmp_path_factory.mktemp("corpus")
    for i in range(23):
        sf.write(root / f"clip{i:02d}.wav", tone(0.3 + 0.1 * (i % 7), 16000, seed=i), 16000)
    out = tmp_path_factory.mktemp("shards")
    prepare_shards([root], out, PrepareSettings(shard_max_samples=4, valid_fraction=0.15, test_fraction=0.1,
                                                min_seconds=0.2), progress=False, workers=1)  # fmt: skip
    return out


def _module(root, rank=0, world=1, **kw):
    dm = AudioShardDataModule(
        root=str(root),
        sample_rate=16000,
        segment_seconds=0.5,
        batch_size=3,
        num_workers=kw.pop("num_workers", 0),
        **kw,
    )
    dm.trainer = SimpleNamespace(
        global_rank=rank, world_size=world
    )  # what DDP would give each rank
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("num_workers", [0, 2])
def test_two_ranks_get_equal_batch_counts_and_disjoint_shards(uneven_shards, num_workers):
    import json

    index = json.loads((uneven_shards / "index.json").read_text())
    assert len(index["splits"]["train"]["shards"]) >= 3
    per_rank = []
    for rank in range(2):
        loader = _module(
            uneven_shards, rank, 2, num_workers=num_workers, shuffle_buffer=0
        ).train_dataloader()
        epochs = [list(loader) for _ in range(2)]
        assert [len(e) for e in epochs] == [len(loader)] * 2
        per_rank.append(epochs)
    train = index["splits"]["train"]
    crops = max(train["num_samples"], int(train["seconds"] / 0.5))  # an epoch covers the audio once
    assert len(per_rank[0][0]) == len(per_rank[1][0]) == crops // 6
    first_keys = [set(per_rank[r][0][0].keys) for r in range(2)]
    assert (
        len(first_keys[0]) == 3 and not first_keys[0] & first_keys[1]
    )  # ranks read different shards


def test_batches_have_the_right_shape_dtype_and_lengths(uneven_shards):
    batch = next(iter(_module(uneven_shards).train_dataloader()))
    assert isinstance(batch, AudioBatch)
    assert batch.audio.shape == (3, 1, 8000) and batch.audio.dtype == torch.float32
    assert batch.lengths.dtype == torch.int64 and (batch.lengths <= 8000).all()
    for i, n in enumerate(batch.lengths.tolist()):  # short clips are zero padded
        assert batch.audio[i, 0, n:].abs().sum() == 0
        assert batch.mask[i, 0].sum() == n


def test_validation_is_deterministic(uneven_shards):
    a = [b for b in _module(uneven_shards).val_dataloader()]
    b = [b for b in _module(uneven_shards, num_workers=2).val_dataloader()]
    assert [x.keys for x in a] == [y.keys for y in b] and len(a) > 0
    assert all(torch.equal(x.audio, y.audio) for x, y in zip(a, b))


def test_training_crops_are_reproducible_with_a_seed(uneven_shards):
    first = [b.audio for b in _module(uneven_shards, seed=3).train_dataloader()]
    again = [b.audio for b in _module(uneven_shards, seed=3).train_dataloader()]
    other = [b.audio for b in _module(uneven_shards, seed=4).train_dataloader()]
    assert all(torch.equal(x, y) for x, y in zip(first, again))
    assert not all(torch.equal(x, y) for x, y in zip(first, other))


def test_sample_rate_mismatch_fails_at_start_naming_the_directory(uneven_shards):
    dm = AudioShardDataModule(root=str(uneven_shards), sample_rate=24000)
    with pytest.raises(ValueError, match=rf"{uneven_shards}.*16000 Hz.*24000 Hz"):
        dm.setup("fit")


def test_root_without_shards_fails_clearly(tmp_path):
    with pytest.raises(FileNotFoundError, match="index.json"):
        AudioShardDataModule(root=str(tmp_path)).setup("fit")
    with pytest.raises(ValueError, match="names no shards"):
        AudioShardDataModule(train_shards=str(tmp_path / "none-*.tar")).setup("fit")


def test_explicit_urls_with_braces_and_a_corrupt_shard(uneven_shards, tmp_path):
    shards = sorted(uneven_shards.glob("train-*.tar"))
    for s in shards:
        shutil.copy(s, tmp_path / s.name)
    (tmp_path / f"train-{len(shards):06d}.tar").write_bytes(b"garbage that is no tar file" * 100)
    pattern = str(tmp_path / f"train-{{000000..{len(shards):06d}}}.tar")
    dm = AudioShardDataModule(train_shards=pattern, sample_rate=16000, segment_seconds=0.5, batch_size=2,
                              num_workers=0, samples_per_epoch=40)  # fmt: skip
    dm.trainer = SimpleNamespace(global_rank=0, world_size=1)
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 20
    for batch in loader:
        dm.on_before_batch_transfer(batch, 0)
    assert dm.corrupt_samples_skipped >= 1  # the bad shard was met, skipped and counted


def test_shipped_samples_prepare_and_load(tmp_path):
    out = tmp_path / "samples16k"
    result = prepare_shards([REPO / "data_prep" / "samples"], out, PrepareSettings(valid_fraction=0.1, test_fraction=0.05),
                            progress=False)  # fmt: skip
    assert result.files_skipped == 0 and result.files_used == 45
    assert result.splits["train"]["seconds"] > 200
    dm = _module(out, num_workers=1)
    batch = next(iter(dm.train_dataloader()))
    assert batch.audio.shape == (3, 1, 8000) and batch.audio.abs().max() > 0.01
    assert len(dm.val_dataloader()) >= 1
