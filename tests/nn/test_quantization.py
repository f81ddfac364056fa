import copy
import datetime
import math
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from lit_codec.nn.configurable import build_module
from lit_codec.nn.quantization import EuclideanCodebook, QuantizerOutput, ResidualVectorQuantizer


def small_rvq(**kwargs) -> ResidualVectorQuantizer:
    args = dict(dim=8, n_q=4, codebook_size=16, frame_rate=75.0, kmeans_iters=4)
    args.update(kwargs)
    return ResidualVectorQuantizer(**args)


def mixture(n_centres: int, dim: int, batch: int, frames: int, spread: float = 0.05, seed: int = 0):
    """(B, D, T) latents drawn around ``n_centres`` well separated centres."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(n_centres, dim, generator=g) * 3
    pick = torch.randint(0, n_centres, (batch * frames,), generator=g)
    x = centres[pick] + spread * torch.randn(batch * frames, dim, generator=g)
    return as_latents(x, batch), centres


def as_latents(rows: torch.Tensor, batch: int) -> torch.Tensor:
    """(B*T, D) rows -> (B, D, T) latents."""
    return rows.view(batch, -1, rows.shape[1]).transpose(1, 2).contiguous()


def test_shapes_codes_and_bitrate():
    rvq = small_rvq()
    out = rvq(torch.randn(3, 8, 10))
    assert isinstance(out, QuantizerOutput)
    assert out.quantized.shape == (3, 8, 10) and out.codes.shape == (3, out.n_q, 10)
    assert out.codes.dtype == torch.int64
    assert 0 <= int(out.codes.min()) and int(out.codes.max()) < 16
    assert 1 <= out.n_q <= 4
    assert out.bits_per_frame == out.n_q * 4
    assert out.bandwidth_kbps == pytest.approx(out.n_q * 4 * 75 / 1000)
    assert out.losses["vq/commit"].dim() == 0 and torch.isfinite(out.losses["vq/commit"])
    for i in range(out.n_q):
        assert 0 < float(out.metrics[f"vq/usage/{i}"]) <= 1
        assert 1 <= float(out.metrics[f"vq/perplexity/{i}"]) <= 16 + 1e-4
    assert torch.equal(out.n_q_per_sample, torch.full((3,), out.n_q))
    with pytest.raises(ValueError):
        rvq(torch.randn(3, 7, 10))
    with pytest.raises(ValueError):
        rvq(torch.randn(3, 8, 10), n_q=5)


def test_eval_uses_all_layers_and_encode_decode_equals_quantized():
    rvq = small_rvq(quantizer_dropout="batch")
    rvq(torch.randn(4, 8, 12), n_q=4)  # k-means init of every layer
    rvq.eval()
    x = torch.randn(2, 8, 9)
    with torch.no_grad():
        out = rvq(x)
        assert out.n_q == 4 and out.codes.shape == (2, 4, 9)
        codes = rvq.encode(x)
        assert torch.equal(codes, out.codes)
        assert torch.equal(rvq.decode(codes), out.quantized)
        two = rvq(x, n_q=2)
        assert two.n_q == 2 and torch.equal(two.codes, codes[:, :2])
        assert torch.equal(rvq.decode(codes[:, :2]), two.quantized)
    # More layers quantize better.
    assert (x - out.quantized).square().mean() < (x - two.quantized).square().mean()


def test_eval_forward_changes_nothing():
    rvq = small_rvq()
    rvq(torch.randn(4, 8, 12))
    rvq.eval()
    before = copy.deepcopy(rvq.state_dict())
    rvq(torch.randn(4, 8, 12))
    rvq.encode(torch.randn(4, 8, 12))
    for key, value in rvq.state_dict().items():
        assert torch.equal(value, before[key]), key


def test_straight_through_gradient():
    rvq = small_rvq(quantizer_dropout="none")
    x = torch.randn(2, 8, 10, requires_grad=True)
    out = rvq(x)
    upstream = torch.randn_like(out.quantized)
    out.quantized.backward(upstream)
    assert torch.equal(x.grad, upstream)
    assert not torch.equal(out.quantized.detach(), x.detach())


@pytest.mark.parametrize("dropout", ["none", "sample"])
def test_commitment_loss_and_its_closed_form_gradient(dropout):
    """The loss equals, and its gradient matches, the plain autograd definition:
    mean over active (layer, vector, channel) of (x - sg(sum of codes of layers <= i))^2."""
    rvq = small_rvq(quantizer_dropout=dropout)
    rvq(torch.randn(4, 8, 12), n_q=4)  # initialise
    before = copy.deepcopy(rvq).eval()
    x = torch.randn(4, 8, 6, requires_grad=True)
    out = rvq(x)
    out.losses["vq/commit"].backward()
    xr = x.detach().clone().requires_grad_()
    total, count = 0.0, 0.0
    for i in range(out.n_q):
        partial = before.decode(out.codes[:, : i + 1])  # (B, D, T)
        active = (out.n_q_per_sample > i).float().view(-1, 1, 1).expand_as(xr)
        total = total + ((xr - partial).square() * active).sum()
        count += float(active.sum())
    reference = total / count
    reference.backward()
    assert out.losses["vq/commit"].item() == pytest.approx(reference.item(), rel=1e-5)
    torch.testing.assert_close(x.grad, xr.grad, rtol=1e-5, atol=1e-7)


def test_ema_update_moves_code_as_expected():
    book = EuclideanCodebook(dim=2, codebook_size=4, decay=0.9, epsilon=1e-5, kmeans_init=False)
    book.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    book.cluster_size.fill_(5.0)
    book.embed_sum.copy_(book.embed * 5.0)
    z = torch.tensor([[1.0, 1.0], [1.0, -1.0], [2.0, 0.0], [10.0, 9.0]])
    idx = book.nearest(z)
    assert idx.tolist() == [0, 0, 0, 3]
    counts, sums, _ = book.statistics(z, idx, step=0)
    assert counts.tolist() == [3, 0, 0, 1]
    book.update_(counts, sums)
    size = torch.tensor([0.9 * 5 + 0.1 * 3, 4.5, 4.5, 0.9 * 5 + 0.1 * 1])
    torch.testing.assert_close(book.cluster_size, size)
    embed_sum_0 = 0.9 * torch.zeros(2) + 0.1 * torch.tensor([4.0, 0.0])
    total = size.sum()
    smoothed = (size + 1e-5) / (total + 4e-5) * total
    torch.testing.assert_close(book.embed[0], embed_sum_0 / smoothed[0])
    # Code 0 moved from the origin toward the mean (4/3, 0) of its vectors.
    assert 0 < book.embed[0, 0] < 4 / 3 and book.embed[0, 1].abs() < 1e-6
    # Unused code 1 stays where it was (up to the smoothing).
    torch.testing.assert_close(book.embed[1], torch.tensor([10.0, 0.0]), rtol=1e-4, atol=1e-4)


def test_kmeans_init_finds_mixture_clusters():
    x, centres = mixture(n_centres=16, dim=8, batch=8, frames=64)
    rvq = small_rvq(n_q=1, quantizer_dropout="none", kmeans_iters=10)
    out = rvq(x)
    book = rvq.layers[0].codebook
    assert bool(book.initialized)
    assert float(out.metrics["vq/usage/0"]) >= 0.9
    # k-means++ seeding gives every centre a code close to it.
    dist = torch.cdist(centres, book.embed)
    assert (dist.min(dim=1).values < 0.1).all()


def test_dead_code_replacement_survives_step_and_next_unused_step():
    torch.manual_seed(0)
    rvq = small_rvq(n_q=1, codebook_size=8, dim=2, quantizer_dropout="none", kmeans_init=False)
    book = rvq.layers[0].codebook
    live = torch.tensor(
        [[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0], [-5, 0], [0, -5], [-5, -5]]
    )
    book.embed.copy_(torch.cat([live, torch.tensor([[100.0, 100.0]])]))
    book.cluster_size.copy_(torch.tensor([10.0] * 7 + [2.01]))  # code 7 about to die
    book.embed_sum.copy_(book.embed * book.cluster_size.unsqueeze(1))
    centres = live[:4]
    x1 = as_latents(centres[torch.arange(64) % 4] + 0.1 * torch.randn(64, 2), batch=2)
    out = rvq(x1)
    assert not (out.codes == 7).any()
    # Replaced after this step's EMA update: code 7 is now a vector of this batch...
    new_code = book.embed[7].clone()
    assert torch.cdist(new_code.view(1, 2), x1.transpose(1, 2).reshape(-1, 2)).min() < 1e-6
    # ...with statistics consistent with it, so the EMA update did not undo it.
    assert book.cluster_size[7] >= 2 * book.threshold_ema_dead_code
    torch.testing.assert_close(book.embed_sum[7], new_code * book.cluster_size[7])
    # Next step with data far from it: unused, but neither reverted nor replaced again.
    near = int(torch.cdist(new_code.view(1, 2), centres).argmin())
    others = centres[[i for i in range(4) if i != near]]
    x2 = as_latents(others[torch.arange(48) % 3] + 0.1 * torch.randn(48, 2), batch=2)
    size_before = book.cluster_size[7].clone()
    out = rvq(x2)
    assert not (out.codes == 7).any()
    torch.testing.assert_close(book.embed[7], new_code, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(book.cluster_size[7], size_before * 0.99)


def test_batch_dropout_reaches_every_n_q_and_is_deterministic():
    a, b, c = small_rvq(seed=3), small_rvq(seed=3), small_rvq(seed=4)
    x = torch.randn(2, 8, 8)
    draws_a = [a(x).n_q for _ in range(40)]
    draws_b = [b(x).n_q for _ in range(40)]
    draws_c = [c(x).n_q for _ in range(40)]
    assert set(draws_a) == {1, 2, 3, 4}
    assert draws_a == draws_b and draws_a != draws_c
    assert int(a.step) == 40


def test_sample_dropout_masks_each_sample():
    rvq = small_rvq(quantizer_dropout="sample")
    rvq(torch.randn(4, 8, 12))  # every layer runs: all initialised
    seen = set()
    for _ in range(10):
        x = torch.randn(6, 8, 5)
        before = copy.deepcopy(rvq).eval()
        out = rvq(x)
        assert out.n_q == 4 and out.codes.shape == (6, 4, 5)  # every layer's codes returned
        for b, n in enumerate(out.n_q_per_sample.tolist()):
            seen.add(n)
            expected = before.decode(out.codes[b : b + 1, :n])
            torch.testing.assert_close(out.quantized[b : b + 1], expected, rtol=1e-5, atol=1e-5)
    assert seen == {1, 2, 3, 4}


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_dropout_fraction_keeps_the_rest_of_the_batch_at_full_bitrate(fraction):
    rvq = small_rvq(quantizer_dropout="sample", dropout_fraction=fraction)
    twin = small_rvq(quantizer_dropout="sample", dropout_fraction=fraction)
    counts = []
    for _ in range(20):
        x = torch.randn(50, 8, 3)
        out, out_twin = rvq(x), twin(x)
        assert torch.equal(out.n_q_per_sample, out_twin.n_q_per_sample)  # seeded draw
        counts.append(out.n_q_per_sample)
    counts = torch.cat(counts)  # (1000,)
    full = (counts == 4).float().mean().item()
    expected = (1 - fraction) + fraction / 4  # undrawn samples + draws that give all 4
    assert abs(full - expected) < 0.06, (full, expected)
    assert set(counts.tolist()) == ({4} if fraction == 0 else {1, 2, 3, 4})


def test_dropout_fraction_outside_0_1_is_refused():
    with pytest.raises(ValueError, match="dropout_fraction"):
        small_rvq(quantizer_dropout="sample", dropout_fraction=1.5)


def test_n_q_for_kbps_matches_the_recipes():
    rvq24 = ResidualVectorQuantizer(dim=8, n_q=8, codebook_size=1024, frame_rate=24000 / 320)
    assert rvq24.frame_rate == 75.0
    assert rvq24.n_q_for_kbps(6.0) == 8 and rvq24.kbps(8) == pytest.approx(6.0)
    rvq16 = ResidualVectorQuantizer(dim=8, n_q=12, codebook_size=1024, frame_rate=50.0)
    assert [rvq16.n_q_for_kbps(k) for k in (1.5, 3.0, 6.0)] == [3, 6, 12]
    assert rvq16.kbps(12) == pytest.approx(6.0)
    for bad in (0.1, 6.5):
        with pytest.raises(ValueError):
            rvq16.n_q_for_kbps(bad)


def test_float32_inside_bf16_autocast():
    rvq = small_rvq(quantizer_dropout="none")
    x = torch.randn(2, 8, 10)
    rvq(x)
    rvq.eval()
    reference = rvq.encode(x)
    rvq.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rvq(x)
        xb = x.to(torch.bfloat16).requires_grad_()
        out_b = rvq(xb)
    assert torch.equal(out.codes, reference)
    assert out_b.quantized.dtype == torch.bfloat16 and torch.isfinite(out_b.quantized).all()
    out_b.quantized.float().sum().backward()
    assert xb.grad is not None and torch.isfinite(xb.grad).all()
    assert all(layer.codebook.embed.dtype == torch.float32 for layer in rvq.layers)
    # Casting the module keeps the codebooks in float32.
    rvq.to(torch.bfloat16)
    assert rvq.layers[0].codebook.embed.dtype == torch.float32
    assert torch.isfinite(rvq(xb.detach()).quantized).all()


def test_warmup_passes_through_then_initialises():
    rvq = small_rvq(warmup_steps=2, quantizer_dropout="none")
    x = torch.randn(2, 8, 10)
    for _ in range(2):
        out = rvq(x)
        assert torch.equal(out.quantized, x)
        assert out.codes.shape == (2, 4, 10) and int(out.codes.abs().sum()) == 0
        assert out.bits_per_frame == 16 and float(out.losses["vq/commit"]) == 0
        assert not bool(rvq.layers[0].codebook.initialized)
    out = rvq(x)
    assert bool(rvq.layers[0].codebook.initialized)
    assert not torch.equal(out.quantized, x) and int(out.codes.abs().sum()) > 0


def test_factorised_l2_codes_give_every_projection_a_gradient():
    rvq = small_rvq(codebook_dim=3, l2_normalize=True, quantizer_dropout="batch", seed=1)
    x = torch.randn(2, 8, 10, requires_grad=True)
    for _ in range(12):
        out = rvq(x)
        rvq.zero_grad()
        (out.quantized.square().mean() + out.losses["vq/commit"]).backward()
        for name, p in rvq.named_parameters():
            assert p.grad is not None, name
        if out.n_q < 4:
            skipped = rvq.layers[3].in_proj.parametrizations.weight.original1
            assert skipped.grad.abs().sum() == 0
    norms = rvq.layers[0].codebook.embed.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    assert rvq.layers[0].codebook.embed.shape == (16, 3)
    rvq.eval()
    with torch.no_grad():
        out = rvq(x)
        assert torch.equal(rvq.decode(out.codes), out.quantized)


def test_state_dict_round_trip_preserves_behaviour(tmp_path):
    rvq = small_rvq(seed=7, codebook_dim=4)
    for _ in range(3):
        rvq(torch.randn(2, 8, 10))
    torch.save({"config": rvq.config(), "state": rvq.state_dict()}, tmp_path / "rvq.pt")
    saved = torch.load(tmp_path / "rvq.pt", weights_only=True)
    clone = build_module(saved["config"])
    clone.load_state_dict(saved["state"])
    assert int(clone.step) == 3
    x = torch.randn(2, 8, 10)
    out_a, out_b = rvq(x), clone(x)  # same dropout draw, same EMA update
    assert out_a.n_q == out_b.n_q and torch.equal(out_a.codes, out_b.codes)
    for key, value in rvq.state_dict().items():
        assert torch.equal(value, clone.state_dict()[key]), key


def test_search_tables_are_cached_until_the_codebook_changes():
    """The squared norms of the codes are computed once, and again after every change."""
    book = EuclideanCodebook(dim=4, codebook_size=256, kmeans_init=False, seed=0).eval()

    def check_fresh(previous):
        tables = book.search_tables()
        assert tables is not previous
        torch.testing.assert_close(tables.embed_sq, book.embed.square().sum(1))
        z = torch.randn(20, 4)
        brute = torch.cdist(z, book.embed).argmin(1)
        assert torch.equal(book.nearest(z[:2]), brute[:2])  # few rows
        assert torch.equal(book.nearest(z), brute)  # many rows
        assert book.search_tables() is tables  # cached while nothing changes
        return tables

    tables = check_fresh(None)
    book.to(torch.float64)  # the codebook stays float32: the same tensor, still valid
    assert book.search_tables() is tables
    z = torch.randn(64, 4)  # an EMA update (training)
    idx = book.nearest(z)
    counts, sums, _ = book.statistics(z, idx, step=0)
    book.update_(counts, sums)
    tables = check_fresh(tables)
    book.replace_(book.cluster_size < 1e9, torch.randn(256, 4))  # dead-code re-seeding
    tables = check_fresh(tables)
    book.load_state_dict(
        EuclideanCodebook(dim=4, codebook_size=256, kmeans_init=False, seed=1).state_dict()
    )
    tables = check_fresh(tables)
    with torch.inference_mode():  # an in-place write, even in inference mode
        book.embed.mul_(2.0)
    tables = check_fresh(tables)
    book.embed = book.embed * 0.5  # a new tensor (what .to(device) does)
    check_fresh(tables)


def test_few_rows_break_ties_like_many_rows():
    """Equal codes: the few-row search picks the code the blocked search picks, which is not
    the first one (the blocked search breaks ties by offset within 64 codes, then block)."""
    book = EuclideanCodebook(dim=3, codebook_size=256, kmeans_init=False, seed=0).eval()
    with torch.no_grad():
        book.embed[70] = book.embed[129]  # offsets 6 and 1 within their blocks of 64
    z = torch.cat([book.embed[129:130] + 0.01, torch.randn(30, 3)])
    many = book.nearest(z)  # more than a few rows: blocked two-level search
    few = torch.cat([book.nearest(z[i : i + 2]) for i in range(0, len(z), 2)])
    assert many[0] == 129
    assert torch.equal(few, many)


@pytest.mark.parametrize("codebook_size", [16, 256])
def test_encode_of_few_frames_equals_many_frames(codebook_size):
    """Streaming encodes one or two frames at a time: the codes equal whole-signal codes."""
    rvq = small_rvq(codebook_size=codebook_size, kmeans_init=False)
    rvq.eval()
    x = torch.randn(2, 8, 40)
    many = rvq.encode(x)
    few = torch.cat([rvq.encode(x[..., i : i + 2]) for i in range(0, 40, 2)], dim=-1)
    assert few.shape == (2, 4, 40) and torch.equal(few, many)
    with torch.no_grad():
        assert torch.equal(rvq(x).codes, many)  # eval forward (statistics and all)
        assert torch.equal(rvq(x[..., :1]).codes, rvq.encode(x[..., :1]))


def test_decode_follows_codebook_changes():
    rvq = small_rvq(kmeans_init=False)
    rvq.eval()
    codes = torch.randint(0, 16, (2, 4, 5))

    def manual():
        books = [layer.codebook.embed for layer in rvq.layers]
        return sum(books[i][codes[:, i]] for i in range(4)).transpose(1, 2)  # (B, D, T)

    torch.testing.assert_close(rvq.decode(codes), manual())
    torch.testing.assert_close(rvq.decode(codes[:, :2]), rvq.decode(codes[:, :2].clone()))
    with torch.no_grad():
        rvq.layers[2].codebook.embed.mul_(-1.0)
    torch.testing.assert_close(rvq.decode(codes), manual())
    rvq.load_state_dict(small_rvq(kmeans_init=False, seed=3).state_dict())
    torch.testing.assert_close(rvq.decode(codes), manual())
    with pytest.raises(IndexError):
        rvq.decode(torch.full((1, 2, 3), 16))  # not a row of the second codebook


DISTRIBUTED_CONFIGS = {
    "direct_batch": dict(dim=4, n_q=3, codebook_size=32, kmeans_iters=3, seed=5),
    "l2_sample": dict(
        dim=4,
        n_q=3,
        codebook_size=16,
        codebook_dim=2,
        l2_normalize=True,
        kmeans_iters=3,
        quantizer_dropout="sample",
        seed=6,
    ),
}


def _distributed_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=30),  # a mismatched collective fails, not hangs
    )
    try:
        results = {}
        for name, config in DISTRIBUTED_CONFIGS.items():
            torch.manual_seed(0)  # same projections on every rank
            rvq = ResidualVectorQuantizer(**config)
            g = torch.Generator().manual_seed(100 + rank)  # different data on every rank
            draws = []
            for step in range(5):
                frames = 16 + 4 * rank if step == 0 else 16  # k-means gathers unequal sizes
                out = rvq(torch.randn(2, 4, frames, generator=g) * (1 + rank))
                draws.append(out.n_q_per_sample.tolist())
            results[name] = {"state": rvq.state_dict(), "draws": draws}
        torch.save(results, os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.distributed
def test_two_ranks_keep_bit_identical_codebooks(tmp_path):
    """Ranks see different data (and batch sizes) yet end with bit-identical codebooks,
    k-means initialisation, dead-code re-seeding and dropout draws."""
    mp.spawn(
        _distributed_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        join=True,
    )
    r0, r1 = (torch.load(tmp_path / f"{r}.pt", weights_only=True) for r in (0, 1))
    for name in DISTRIBUTED_CONFIGS:
        assert r0[name]["draws"] == r1[name]["draws"], name
        assert len({tuple(d) for d in r0[name]["draws"]}) > 1
        for key, value in r0[name]["state"].items():
            assert torch.equal(value, r1[name]["state"][key]), (name, key)
        assert bool(r0[name]["state"]["layers.0.codebook.initialized"])
        sizes = r0[name]["state"]["layers.0.codebook.cluster_size"]
        # Re-seeding ran (32 codes for 64 vectors leave some below threshold 2 otherwise).
        assert float(sizes.min()) >= 2.0 and not math.isnan(float(sizes.sum()))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("projected", [False, True])
def test_cuda_training_eval_and_bf16(projected):
    extra = dict(codebook_dim=4, l2_normalize=True) if projected else {}
    rvq = small_rvq(quantizer_dropout="sample", **extra).cuda()
    x = torch.randn(4, 8, 300, device="cuda", requires_grad=True)
    for _ in range(3):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = rvq(x.to(torch.bfloat16))
        assert out.quantized.dtype == torch.bfloat16 and torch.isfinite(out.quantized).all()
        (out.quantized.float().square().mean() + out.losses["vq/commit"]).backward()
    assert torch.isfinite(x.grad).all()
    assert rvq.layers[0].codebook.embed.dtype == torch.float32
    rvq.eval()
    with torch.no_grad():
        out = rvq(x)
        assert torch.equal(rvq.decode(out.codes), out.quantized)
        cpu = copy.deepcopy(rvq).cpu()
        agree = (cpu.encode(x.cpu()) == out.codes.cpu()).float().mean()
    assert agree > 0.99
