"""Real multi-process `lit-codec fit` runs on CPU (gloo): DDP keeps ranks identical."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "lit_codec.cli"]


def run_fit(args, cwd, timeout=600):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "PYTHONPATH": str(REPO)}
    proc = subprocess.run(
        [*CLI, "fit", *map(str, args)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.fixture(scope="module")
def uneven_shards(tmp_path_factory):
    """Speech samples in 3 training shards of unequal size."""
    from lit_codec.data.prepare import PrepareSettings, prepare_shards

    out = tmp_path_factory.mktemp("uneven")
    prepare_shards([REPO / "data_prep" / "samples" / "speech"], out,
                   PrepareSettings(shard_max_samples=13, valid_fraction=0.1, test_fraction=0.0), progress=False)  # fmt: skip
    return out


def _common(shards, root, steps):
    return ["--config", REPO / "recipes/codec/debug.yaml", "--data.root", shards, "--trainer.max_steps", steps,
            "--trainer.default_root_dir", root, "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
            "--trainer.num_sanity_val_steps", "0", "--trainer.val_check_interval", "1000",
            "--data.num_workers", "0", "--data.batch_size", "4",
            "--model.init_args.quantizer.init_args.warmup_steps", "2",
            "--model.init_args.discriminator_start_step", "3",
            "--trainer.callbacks+=tests.distributed_support.DumpState",
            "--trainer.callbacks.directory", root / "dump"]  # fmt: skip


@pytest.mark.distributed
@pytest.mark.slow
def test_plain_ddp_keeps_ranks_identical(uneven_shards, tmp_path):
    import json

    index = json.loads((uneven_shards / "index.json").read_text())
    assert len(index["splits"]["train"]["shards"]) == 3  # uneven over 2 ranks
    proc = run_fit([*_common(uneven_shards, tmp_path, 11), "--trainer.devices", "2", "--trainer.strategy", "ddp",
                    "--trainer.accelerator", "cpu"], cwd=tmp_path)  # fmt: skip
    assert "broadcast_buffers" not in proc.stderr  # no deprecated DDP argument
    ranks = [torch.load(tmp_path / "dump" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["generator_step"] == ranks[1]["generator_step"] == 7  # 3 G-only + 4 (G+D) steps
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 11
    assert ranks[0]["batches"] == ranks[1]["batches"]
    assert (
        ranks[0]["n_q"] == ranks[1]["n_q"] and len(set(ranks[0]["n_q"][2:])) > 1
    )  # same dropout draws
    state0, state1 = ranks[0]["state"], ranks[1]["state"]
    assert state0.keys() == state1.keys()
    for key in state0:  # generator, discriminator, codebooks: identical on both ranks
        assert torch.equal(state0[key], state1[key]), key
    assert ranks[0]["losses"] != ranks[1]["losses"]  # ... though each rank saw its own data


@pytest.mark.distributed
def test_two_ranks_make_the_same_first_update_as_one_rank_with_twice_the_batch(tmp_path):
    """2 ranks x 4 clips vs 1 rank x 8 clips, same data: same weights after one GAN step.

    Tolerance: gradients agree to float rounding (sums in another order), but Adam's first
    step divides each gradient by its own magnitude, so a weight whose gradient is ~0 can
    move by up to the learning rate (3e-4) on either side. Hence: every weight within 1e-4,
    and fewer than 0.1 % of all weights more than 1e-6 apart."""
    script = REPO / "tests" / "ddp_equivalence_script.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for devices in (1, 2):
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / f"w{devices}.pt"), str(devices)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = (torch.load(tmp_path / f"w{d}.pt", weights_only=True) for d in (1, 2))
    assert one.keys() == two.keys()
    initial = __import__("tests.models.tiny", fromlist=["tiny_gan"])
    torch.manual_seed(0)
    start = initial.tiny_gan().state_dict()
    moved = far = total = 0
    for key in one:
        if one[key].is_floating_point():
            torch.testing.assert_close(two[key], one[key], atol=1e-4, rtol=1e-4, msg=key)
            far += int(((two[key] - one[key]).abs() > 1e-6).sum())
            total += one[key].numel()
            moved += not torch.equal(one[key], start[key])
    assert far < 1e-3 * total, (far, total)
    assert moved > 10  # the step really changed the networks


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp2_delta_shards_trains_and_resumes(uneven_shards, tmp_path):
    common = [*_common(uneven_shards, tmp_path, 9), "--config", REPO / "recipes/codec/fsdp.yaml",
              "--trainer.devices", "2", "--trainer.accelerator", "cpu"]  # fmt: skip
    proc = run_fit(common, cwd=tmp_path)
    assert "returned a view tensor" not in proc.stderr  # FSDP2 gets owned outputs
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert (
        last.is_dir() and len(list(last.glob("*.distcp"))) == 2
    )  # saved sharded, one file per rank
    ranks = [torch.load(tmp_path / "dump" / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for rank in ranks:
        assert rank["generator_step"] == 6  # 3 G-only + 3 (G+D)
        assert all(rank["requires_grad"].values())  # toggling left no sharded parameter frozen
        moved = {
            net: any(v for k, v in rank["changed"].items() if k.startswith(net))
            for net in ("generator", "discriminator")
        }
        assert moved == {"generator": True, "discriminator": True}
        assert all(torch.isfinite(torch.tensor(x)) for x in rank["losses"])
    for key in ranks[0]["state"]:
        assert torch.equal(ranks[0]["state"][key], ranks[1]["state"][key]), key
    # resume the sharded checkpoint, then consolidate it into one file for inference
    run_fit([*common[: common.index("--trainer.max_steps") + 1], 13, *common[common.index("--trainer.max_steps") + 2 :],
             "--ckpt_path", "last"], cwd=tmp_path)  # fmt: skip
    resumed = torch.load(tmp_path / "dump" / "rank0.pt", weights_only=True)
    # restored at generator step 6, then 2 steps (a run that started over would make 8)
    assert resumed["generator_step"] == 8 and len(resumed["losses"]) == 2
    from lit_codec.cli import main
    from lit_codec.codec import Codec

    main(["export", "--ckpt", str(last), "--output", str(tmp_path / "codec.safetensors")])
    codec = Codec.from_checkpoint(tmp_path / "codec.safetensors")
    assert codec.encode(torch.zeros(16000)).shape == (1, 4, 50)
