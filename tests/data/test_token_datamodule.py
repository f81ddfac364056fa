"""TokenShardDataModule and ``lit-codec tokens`` on token shards of tiny 8 kHz clips."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest

from lit_codec.data import TokenBatch, TokenShardDataModule
from lit_codec.data.token_shards import TokenShardSettings, make_token_shards
from lit_codec.data.token_stream import budget_batches
from lit_codec.lm.templates import load_templates

from .token_factory import export_tiny_codec, make_audio_shards

REPO = Path(__file__).resolve().parents[2]
TASKS = ("se", "tse", "dereverb")
BUDGET = 7000  # frames: the tiny codec makes 1000 frames/s, a tse sequence of a 1.1 s clip ~3300


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dm_tokens")
    audio = make_audio_shards(root, valid_fraction=0.25, split_by="speaker")
    out = root / "tokens"
    make_token_shards(TokenShardSettings(str(audio), str(out), codec=str(export_tiny_codec(root / "codec.safetensors")),
                                         tasks=TASKS, shard_max_samples=3, workers=1, progress=False))  # fmt: skip
    return out


def module(root, **kw) -> TokenShardDataModule:
    options = {"tasks": {"se": 1.0, "tse": 1.0}, "max_tokens": BUDGET, "num_workers": 0, "pool": 8}
    return TokenShardDataModule(str(root), **{**options, **kw})


def take(loader, n: int) -> list[TokenBatch]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def signature(batch: TokenBatch) -> tuple:
    return tuple(batch.keys), tuple(batch.tasks), batch.ids.shape, int(batch.ids.sum())


def test_budget_batches_respect_the_budget_and_bucket_by_length():
    lengths = [5, 30, 6, 29, 7, 31, 50]
    batches = budget_batches(lengths, max_tokens=64)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= 64
    assert [sorted(lengths[i] for i in b) for b in batches] == [[5, 6, 7], [29, 30], [31], [50]]
    assert budget_batches([10, 100], max_tokens=50) == [[0]]  # over the budget: left out
    assert all(len(b) <= 2 for b in budget_batches(lengths, 64, max_batch_size=2))


def test_batches_hold_masks_of_the_chosen_tasks_within_the_budget(tokens):
    data = module(tokens, tasks={"se": 1.0, "tse": 1.0, "dereverb": 0.0})
    data.setup("fit")
    vocab = data.vocabulary
    assert vocab.hash == json.loads((tokens / "index.json").read_text())["vocab_hash"]
    assert data.templates == {t: load_templates()[t] for t in ("se", "tse")}  # from the index
    seen, batches = set(), 0
    for batch in _endless(data):  # an epoch of these tiny shards is 2-3 batches
        batches += 1
        if (seen == {"se", "tse"} and batches > 12) or batches > 60:
            break
        assert isinstance(batch, TokenBatch)
        assert len(batch) * batch.frames <= BUDGET
        seen.update(batch.tasks)
        for i, task in enumerate(batch.tasks):
            n = int(batch.lengths[i])
            assert batch.ids[i, 0, 0] == vocab.special("<start>")
            assert batch.ids[i, 1, 0] == vocab.task_id(task)
            assert batch.ids[i, n - 1, 0] == vocab.special("<end>")
            assert not batch.mask[i, n:].any() and (batch.ids[i, n:] == vocab.pad_id).all()
            # the loss covers the target (all codebooks), its end marker and <end>; the
            # condition mask covers the condition segments' frames, never the target's
            target = batch.loss_mask[i, :n].all(dim=1).nonzero()[:, 0]
            assert batch.loss_mask[i].sum() == (len(target)) * vocab.codec.n_q + 2
            assert not (batch.condition_mask[i] & batch.loss_mask[i].any(dim=1)).any()
            assert batch.condition_mask[i].sum() > 0
    # dereverb has weight 0. Epochs of 2 batches: a test that stopped at the end of the first
    # one saw only se in 2 of 3 clean-clone runs (about 5 draws); 60 batches hold both
    assert seen == {"se", "tse"}, (seen, batches)


def test_two_ranks_get_equal_batch_counts(tokens):
    counts = []
    for rank in (0, 1):
        data = module(tokens)
        data._rank_world = lambda rank=rank: (rank, 2)  # what a 2-process trainer reports
        data.setup("fit")
        loader = data.train_dataloader()
        batches = list(loader)
        counts.append(len(batches))
        assert len(batches) == len(loader)
        val = list(data.val_dataloader())
        counts.append(len(val))
    assert counts[0] == counts[2] > 0 and counts[1] == counts[3] > 0


def test_validation_is_every_task_of_every_sample_in_a_fixed_order(tokens):
    data = module(tokens, tasks={"se": 1.0, "tse": 1.0, "dereverb": 1.0})
    data.setup("fit")
    first = [signature(b) for b in data.val_dataloader()]
    again = module(tokens, tasks={"se": 1.0, "tse": 1.0, "dereverb": 1.0})
    again.setup("validate")
    assert [signature(b) for b in again.val_dataloader()] == first
    index = json.loads((tokens / "index.json").read_text())
    served = index["splits"]["valid"]["tasks"]
    pairs = [(k, t) for b in data.val_dataloader() for k, t in zip(b.keys, b.tasks)]
    assert len(pairs) == len(set(pairs)) == sum(served.values())
    # two ranks: batches dealt in turn; a filler batch (no real token) evens the counts
    halves = []
    for rank in (0, 1):
        part = module(tokens, tasks={"se": 1.0, "tse": 1.0, "dereverb": 1.0})
        part._rank_world = lambda rank=rank: (rank, 2)
        part.setup("validate")
        halves.append(list(part.val_dataloader()))
    assert len(halves[0]) == len(halves[1])
    real = [b for h in halves for b in h if b.mask.any()]
    assert sorted(signature(b) for b in real) == sorted(first)
    assert all(not b.loss_mask.any() for h in halves for b in h if not b.mask.any())


def test_a_resumed_loader_continues_with_the_next_batch(tokens):
    data = module(tokens)
    data.setup("fit")
    uninterrupted = [signature(b) for b in take(_endless(data), 7)]
    first = module(tokens)
    first.setup("fit")
    loader = first.train_dataloader()
    for _ in take(_endless(first), 4):
        loader.consumed += 1  # what on_before_batch_transfer counts in training
    state = loader.state_dict()
    resumed = module(tokens)
    resumed.setup("fit")
    again = resumed.train_dataloader()
    again.load_state_dict(state)
    assert [signature(b) for b in take(_endless(resumed), 3)] == uninterrupted[4:]


def _endless(data):
    loader = data.train_dataloader()
    while True:
        yield from loader


def test_no_root_reads_nothing_until_setup_and_then_says_what_to_set():
    data = TokenShardDataModule(None, tasks={"se": 1.0})
    assert data.vocabulary is None
    with pytest.raises(ValueError, match="set data.root"):
        data.setup("fit")


def test_tasks_the_shards_lack_and_audio_shards_are_refused(tokens, tmp_path):
    with pytest.raises(ValueError, match=r"\['tts'\].*their tasks: \['se', 'tse', 'dereverb'\]"):
        module(tokens, tasks={"tts": 1.0}).setup("fit")
    with pytest.raises(ValueError, match="not a token-shard index"):
        module(tokens.parent / "audio_8000").setup("fit")
    with pytest.raises(ValueError, match="weights must be >= 0"):
        TokenShardDataModule(str(tokens), tasks={"se": -1.0})


def test_a_corrupt_sample_is_skipped_and_the_others_kept(tokens, tmp_path, caplog):
    broken = tmp_path / "tokens"
    shutil.copytree(tokens, broken)
    shard = broken / json.loads((broken / "index.json").read_text())["splits"]["train"]["shards"][0]
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    victim = next(m.name for m, _ in members if m.name.endswith(".noisy_codes.npy"))
    with tarfile.open(shard, "w") as tar:
        for m, data in members:
            data = b"garbage" if m.name == victim else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    data = module(broken, tasks={"se": 1.0})
    data.setup("fit")
    with caplog.at_level("WARNING"):
        keys = {k for b in take(_endless(data), 8) for k in b.keys}
    assert any(victim.split(".")[0] in r.getMessage() and "noisy_codes.npy" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    assert victim.split(".")[0] not in keys
    good = module(tokens, tasks={"se": 1.0})
    good.setup("fit")
    assert (
        len({k for b in take(_endless(good), 8) for k in b.keys} - keys) == 1
    )  # only the victim is lost


def test_the_tokens_command_prints_each_segment(tokens, capsys):
    from lit_codec.cli import main

    def run(*args) -> tuple[int, str, str]:  # in this process: exit code, stdout, stderr
        try:
            main(["tokens", "--input", str(tokens), *args])
            code = 0
        except SystemExit as exit_info:
            code = exit_info.code or 0
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = run("--count", "4", "--json", "--task", "tse")
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    index = json.loads((tokens / "index.json").read_text())
    assert len(rows) == 4 and {r["task"] for r in rows} == {"tse"}
    for row in rows:
        assert row["vocab_hash"] == index["vocab_hash"]
        assert [s["name"] for s in row["segments"]] == ["mixture", "prompt", "audio"]
        mixture, prompt, audio = row["segments"]
        assert audio["target"] and mixture["frames"] == audio["frames"] > 0
        assert 0 < prompt["frames"] <= 3000  # at most 3 s at 1000 frames/s
        assert row["frames"] == 3 + sum(s["frames"] + 2 for s in row["segments"])
    code, out, _ = run("--count", "1", "--split", "valid")
    assert code == 0 and "target" in out and "cb0:" in out
    code, _, err = run("--task", "tts")
    assert code == 2 and "hold the tasks" in err


def test_index_holds_the_templates_the_samples_were_made_for(tokens):
    index = json.loads((tokens / "index.json").read_text())
    stored = load_templates(index["templates"])
    assert list(stored) == list(index["tasks"])
    assert stored == {t: load_templates()[t] for t in stored}
