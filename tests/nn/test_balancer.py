import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_codec.nn.balancer import BalancerOutput, LossBalancer
from lit_codec.nn.configurable import build_module, module_config

TARGET = torch.tensor([[1.0, -1.0, 2.0], [0.0, 3.0, -2.0]])


def _toy(a: float = 1.0, seed: int = 0):
    """Output x (B=2, D=3) with two quadratic losses whose gradients are known in closed form."""
    torch.manual_seed(seed)
    x = torch.randn(2, 3, requires_grad=True)
    losses = {"quad": a * (x**2).sum(), "target": ((x - TARGET) ** 2).sum()}
    grads = {"quad": 2 * a * x.detach(), "target": 2 * (x.detach() - TARGET)}
    return x, losses, grads


def _per_item_norm(g):
    return g.norm(dim=1).mean()


def test_gradient_equals_analytic_combination():
    weights = {"quad": 3.0, "target": 1.0}
    bal = LossBalancer(weights, total_norm=2.0, ema_decay=0.0)  # EMA = this step's norm
    x, losses, grads = _toy()
    out = bal(losses, x)
    assert isinstance(out, BalancerOutput) and out.surrogate.dim() == 0
    out.surrogate.backward()
    expected = sum(
        weights[k] / 4.0 * 2.0 * grads[k] / (_per_item_norm(grads[k]) + 1e-12) for k in weights
    )
    torch.testing.assert_close(x.grad, expected)
    for k in weights:
        torch.testing.assert_close(out.norms[k], _per_item_norm(grads[k]))
        # each loss's share of the balanced gradient norm follows its weight
        torch.testing.assert_close(
            out.scales[k] * out.norms[k], torch.tensor(weights[k] / 4.0 * 2.0)
        )
    total = sum(_per_item_norm(g) for g in grads.values())
    torch.testing.assert_close(out.ratios["quad"], _per_item_norm(grads["quad"]) / total)
    expected_effective = sum(out.scales[k] * losses[k].detach() for k in weights)
    torch.testing.assert_close(out.effective_loss, expected_effective)


def test_whole_batch_norm_option():
    bal = LossBalancer({"quad": 1.0, "target": 1.0}, ema_decay=0.0, per_batch_item=False)
    x, losses, grads = _toy()
    bal(losses, x).surrogate.backward()
    expected = sum(0.5 * g / g.norm() for g in grads.values())
    torch.testing.assert_close(x.grad, expected)


def test_scaling_a_loss_does_not_change_the_balanced_gradient():
    results = []
    for a in (1.0, 1000.0):
        bal = LossBalancer({"quad": 1.0, "target": 2.0}, ema_decay=0.9)
        for step in range(3):
            x, losses, _ = _toy(a, seed=step)
            bal(losses, x).surrogate.backward()
        results.append(x.grad)
    torch.testing.assert_close(results[0], results[1])
    # while a plain weighted sum would be dominated by the scaled loss
    assert results[0].norm() < 10


def test_ema_is_bias_corrected():
    bal = LossBalancer({"quad": 1.0, "target": 1.0}, ema_decay=0.9)
    x1, l1, g1 = _toy(seed=1)
    bal(l1, x1)
    x2, l2, g2 = _toy(seed=2)
    out = bal(l2, x2)
    for k in ("quad", "target"):
        n1, n2 = _per_item_norm(g1[k]), _per_item_norm(g2[k])
        torch.testing.assert_close(out.ema_norms[k], (0.9 * n1 + n2) / 1.9)


def test_state_dict_round_trip_gives_same_next_output(tmp_path):
    weights = {"quad": 1.0, "target": 4.0}
    bal = LossBalancer(weights, ema_decay=0.5)
    for step in range(3):
        x, losses, _ = _toy(seed=step)
        bal(losses, x)
    state = bal.state_dict()
    assert set(state) == {"ema_total", "ema_weight"} and state["ema_weight"].shape == (2,)
    torch.save(state, tmp_path / "b.pt")
    restored = build_module(module_config(bal))
    restored.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True))
    fresh = LossBalancer(weights, ema_decay=0.5)

    grads = []
    for b in (bal, restored, fresh):
        x, losses, _ = _toy(seed=10)
        b(losses, x).surrogate.backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[1], grads[0], rtol=0, atol=0)
    assert not torch.allclose(grads[2], grads[0])  # the restored statistics mattered
    torch.testing.assert_close(restored.ema_total, bal.ema_total)


def test_unknown_or_missing_keys_raise_key_error():
    bal = LossBalancer({"rec/mel": 1.0, "adv/gen": 1.0})
    x = torch.randn(2, 4, requires_grad=True)
    with pytest.raises(KeyError, match=r"not in the balancer's weights \['rec/stft'\]"):
        bal({"rec/mel": x.sum(), "adv/gen": x.sum(), "rec/stft": x.sum()}, x)
    with pytest.raises(KeyError, match=r"missing \['adv/gen'\]"):
        bal({"rec/mel": x.sum()}, x)


def test_loss_not_reaching_output_is_named():
    bal = LossBalancer({"rec/mel": 1.0, "vq/commit": 1.0})
    x = torch.randn(2, 4, requires_grad=True)
    other = torch.randn(3, requires_grad=True)
    with pytest.raises(ValueError, match="'vq/commit' does not depend"):
        bal({"rec/mel": x.square().sum(), "vq/commit": other.sum()}, x)
    with pytest.raises(ValueError, match="'vq/commit' does not depend"):
        bal({"rec/mel": x.square().sum(), "vq/commit": torch.tensor(0.0)}, x)
    with pytest.raises(ValueError, match="require grad"):
        bal({"rec/mel": x.square().sum(), "vq/commit": x.sum()}, x.detach())


def test_inactive_loss_is_skipped_and_its_statistics_kept():
    bal = LossBalancer({"quad": 1.0, "target": 3.0}, ema_decay=0.0)
    x, losses, grads = _toy()
    out = bal({"quad": losses["quad"], "target": None}, x)
    out.surrogate.backward()
    assert set(out.norms) == {"quad"}
    torch.testing.assert_close(x.grad, grads["quad"] / _per_item_norm(grads["quad"]))
    assert bal.ema_weight.tolist() == [1.0, 0.0]


def test_surrogate_composes_with_other_losses_through_a_generator():
    torch.manual_seed(0)
    gen = torch.nn.Linear(3, 3)
    z = torch.randn(2, 3)
    bal = LossBalancer({"quad": 1.0, "target": 1.0}, ema_decay=0.0)
    x = gen(z)  # (2, 3)
    commit = gen.weight.square().sum()  # depends on the generator, not on x
    out = bal({"quad": (x**2).sum(), "target": ((x - TARGET) ** 2).sum()}, x)
    (out.surrogate + commit).backward()
    got = [p.grad.clone() for p in gen.parameters()]

    gen.zero_grad()
    x = gen(z)
    g = 2 * x.detach()
    h = 2 * (x.detach() - TARGET)
    combined = 0.5 * g / _per_item_norm(g) + 0.5 * h / _per_item_norm(h)
    x.backward(combined)
    gen.weight.square().sum().backward()
    for a, b in zip(got, gen.parameters()):
        torch.testing.assert_close(a, b.grad)


def test_bf16_output():
    bal = LossBalancer({"quad": 1.0, "target": 1.0}, ema_decay=0.0)
    x = torch.randn(2, 3, requires_grad=True)
    y = x.bfloat16()
    out = bal({"quad": (y.float() ** 2).sum(), "target": ((y.float() - TARGET) ** 2).sum()}, y)
    out.surrogate.backward()
    assert torch.isfinite(x.grad).all() and out.norms["quad"].dtype == torch.float32


def test_invalid_weights():
    with pytest.raises(ValueError):
        LossBalancer({})
    with pytest.raises(ValueError):
        LossBalancer({"a": 0.0})
    with pytest.raises(ValueError):
        LossBalancer({"a": 1.0, "b": -1.0})


def _ddp_worker(rank: int, tmp: str):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{tmp}/init", rank=rank, world_size=2)
    try:
        bal = LossBalancer({"quad": 1.0, "target": 1.0}, ema_decay=0.0)
        x, losses, _ = _toy(seed=rank)
        out = bal(losses, x)
        torch.save({k: float(v) for k, v in out.ema_norms.items()}, f"{tmp}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_norms_are_averaged_across_ranks(tmp_path):
    mp.start_processes(_ddp_worker, args=(str(tmp_path),), nprocs=2, start_method="spawn")
    results = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for k in ("quad", "target"):
        local = [float(_per_item_norm(_toy(seed=r)[2][k])) for r in range(2)]
        assert results[0][k] == pytest.approx(sum(local) / 2)
        assert results[1][k] == pytest.approx(results[0][k])
