"""MultiScaleLM and its codebook patterns: heads, causality, cached decoding, overfitting."""

import pytest
import torch

from lit_codec.lm import CodecInfo, Vocabulary
from lit_codec.nn.codebook_patterns import PATTERNS, DelayPattern, get_pattern
from lit_codec.nn.configurable import build_module
from lit_codec.nn.multiscale_lm import LMOutput, MultiScaleLM
from lit_codec.nn.transformer import TransformerConfig

N_Q, SIZE, D_C = 3, 8, 5
VOCAB = Vocabulary.build(
    CodecInfo("tiny0123", 16000, 50, n_q=N_Q, codebook_size=SIZE),
    {"phone": 5, "text": 6},
    tasks=["tts"],
    segments=["phone", "audio"],
)
GLOBAL = TransformerConfig(width=32, depth=2, heads=2)
LOCAL = TransformerConfig(width=16, depth=2, heads=2)


def tiny(pattern="multiscale", **kwargs) -> MultiScaleLM:
    kwargs = {"global_config": GLOBAL, "local_config": LOCAL, "continuous_dim": D_C, **kwargs}
    return MultiScaleLM.from_vocabulary(VOCAB, pattern=pattern, **kwargs).eval()


def grid(batch: int, frames: int, generator=None) -> torch.Tensor:
    """Random ids as a sequence lays them out: codec frames, and token frames with <pad> fill."""
    codes = torch.randint(0, SIZE, (batch, frames, N_Q), generator=generator)
    ids = torch.as_tensor(VOCAB.codec_ids(codes.numpy()))  # (B, F, n_q)
    phone = VOCAB.range("phone")
    tokens = torch.randint(phone.start, phone.stop, (batch, frames), generator=generator)
    is_token = torch.rand(batch, frames, generator=generator) < 0.3  # (B, F)
    ids[..., 0] = torch.where(is_token, tokens, ids[..., 0])
    ids[..., 1:] = torch.where(is_token[..., None], VOCAB.pad_id, ids[..., 1:])
    return ids


def conditions(batch: int, frames: int):
    continuous = torch.randn(batch, frames, D_C)
    is_continuous = torch.zeros(batch, frames, dtype=torch.bool)
    is_continuous[:, 1:3] = True
    return continuous, is_continuous


def test_heads_cover_exactly_the_ids_of_their_codebook():
    model = tiny()
    codec = VOCAB.range("codec")
    non_codec = [i for i in range(VOCAB.size) if not codec.start <= i < codec.stop]
    assert model.head_sizes == (len(non_codec) + SIZE,) + (SIZE + 1,) * (N_Q - 1)
    for k in range(N_Q):
        held = model.local_to_id[k, : model.head_sizes[k]]
        start, stop = VOCAB.codebook_range(k)
        expected = list(range(start, stop)) + (non_codec if k == 0 else [VOCAB.pad_id])
        assert sorted(held.tolist()) == sorted(expected)
        assert (model.local_to_id[k, model.head_sizes[k] :] == -1).all()
        # the maps are inverse on every id the head holds, -1 elsewhere
        assert model.id_to_local[k, held].tolist() == list(range(model.head_sizes[k]))
        assert (model.id_to_local[k] >= 0).sum() == model.head_sizes[k]
    # head k > 0: the code itself, then <pad>
    assert model.id_to_local[1, VOCAB.codebook_range(1)[0] + 5] == 5
    assert model.id_to_local[2, VOCAB.pad_id] == SIZE


def test_targets_to_local_round_trips_and_refuses_foreign_ids():
    model = tiny()
    ids = grid(2, 6)
    local = model.targets_to_local(ids)
    assert (local >= 0).all() and torch.equal(model.local_to_ids(local), ids)
    assert torch.equal(model.local_to_ids(local[..., 1], codebook=1), ids[..., 1])
    bad = ids.clone()
    bad[1, 4, 2] = VOCAB.codebook_range(1)[0]  # a codebook-1 code in column 2
    with pytest.raises(ValueError, match=r"at index \[1, 4, 2\].*codebook 2 or <pad>"):
        model.targets_to_local(bad)
    bad = ids.clone()
    bad[0, 0, 0] = VOCAB.codebook_range(2)[0]
    with pytest.raises(ValueError, match="head 0"):
        model.targets_to_local(bad)
    assert model.targets_to_local(bad, check=False)[0, 0, 0] == -1


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_shapes_of_every_pattern(pattern):
    model = tiny(pattern)
    out = model(grid(2, 7), *conditions(2, 7))
    assert isinstance(out, LMOutput) and out.n_q == N_Q
    assert out.first.shape == (2, 7, model.head_sizes[0])
    assert out.rest.shape == (2, 7, N_Q - 1, SIZE + 1)
    assert [x.shape[-1] for x in out.logits] == list(model.head_sizes)
    padded = out.padded()
    assert padded.shape == (2, 7, N_Q, model.head_sizes[0])
    assert torch.isinf(padded[:, :, 1:, SIZE + 1 :]).all()
    assert torch.equal(padded[:, :, 2, : SIZE + 1], out.rest[:, :, 1])
    # the global sequence each pattern runs
    steps = {"multiscale": 7, "parallel": 7, "delay": 7 + N_Q - 1, "flat": 8 * N_Q - 1}
    assert get_pattern(pattern).steps(7, N_Q) == steps[pattern]


def _blind_to(order: torch.Tensor, frame: int, codebook: int) -> torch.Tensor:
    """(F, n_q) bool: the predictions that may not see cell (frame, codebook).

    Row t, codebook k predicts cell (t + 1, k) (the last row: a cell past the grid), which
    may only see cells earlier than itself in the pattern's order.
    """
    beyond = torch.full((1, order.shape[1]), 10**9)
    predicted = torch.cat((order[1:], beyond))  # (F, n_q) order of cell (t + 1, k)
    return predicted <= order[frame, codebook]


def _other_id(value: int, codebook: int) -> int:
    """A different id that codebook position ``codebook`` may hold."""
    start, stop = VOCAB.codebook_range(codebook)
    if start <= value < stop:
        return start + (value - start + 1) % SIZE
    return VOCAB.special("<end>") if codebook == 0 else start


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_no_prediction_sees_its_cell_or_a_later_one(pattern):
    """Changing cell (f, k) changes no prediction of a cell at or before it in the pattern's order."""
    model = tiny(pattern)
    frames = 5
    ids = grid(1, frames)
    continuous, is_continuous = conditions(1, frames)
    base = model(ids, continuous, is_continuous).padded(0.0)[0]  # (F, n_q, H)
    order = model.pattern.order(frames, N_Q)
    for f in range(frames):
        for k in range(N_Q):
            other = ids.clone()
            other[0, f, k] = _other_id(int(ids[0, f, k]), k)
            out = model(other, continuous, is_continuous).padded(0.0)[0]
            blind = _blind_to(order, f, k)  # (F, n_q)
            torch.testing.assert_close(out[blind], base[blind], rtol=0, atol=1e-6)
            if k == 0 and is_continuous[0, f] and pattern != "multiscale":
                continue  # its vector stands in for the id (multiscale's local stack reads it)
            assert (out[~blind] - base[~blind]).abs().amax() > 1e-4  # and later ones see it
    # a continuous frame stands in codebook 0 of its frame
    moved = continuous.clone()
    moved[0, 2] += 1.0
    out = model(ids, moved, is_continuous).padded(0.0)[0]
    blind = _blind_to(order, 2, 0)
    torch.testing.assert_close(out[blind], base[blind], rtol=0, atol=1e-6)
    assert (out[~blind] - base[~blind]).abs().amax() > 1e-4


def test_delay_pattern_layout():
    cells = torch.arange(3 * 2).view(1, 3, 2) + 1  # 2 frames + the empty row (5, 6)
    laid = DelayPattern().layout(cells)[0]  # (S, n_q)
    assert laid.tolist() == [[1, 6], [3, 2], [5, 4]]  # codebook 1 one step late; empty: 5, 6


@pytest.mark.parametrize(
    "options",
    [{}, {"local_context": "every"}, {"local_context": "every", "local_weights_per_step": True}],
    ids=["first", "every", "every-per-step"],
)
def test_multiscale_cached_decoding_equals_forward(options):
    model = tiny(**options)
    frames = 6
    ids = grid(2, frames)
    continuous, is_continuous = conditions(2, frames)
    full = model(ids, continuous, is_continuous)
    state = model.new_state(2, frames)
    prompt = model.global_step(ids[:, :2], state, continuous[:, :2], is_continuous[:, :2])
    contexts = [prompt[:, 0], prompt[:, 1]]
    for t in range(2, frames):
        h = model.global_step(
            ids[:, t : t + 1], state, continuous[:, t : t + 1], is_continuous[:, t : t + 1]
        )
        contexts.append(h[:, 0])
    for t in range(frames - 1):  # the last row's codebooks k > 0 see the empty cell
        for k in range(N_Q):
            previous = ids[:, t + 1, k - 1] if k else None
            logits = model.local_step(contexts[t], k, previous, state)
            torch.testing.assert_close(logits, full.logits[k][:, t], rtol=0, atol=1e-5)
    logits = model.local_step(contexts[-1], 0, None, state)
    torch.testing.assert_close(logits, full.first[:, -1], rtol=0, atol=1e-5)


@pytest.mark.parametrize("pattern", ["flat", "delay", "parallel"])
def test_global_cache_equals_forward_for_every_pattern(pattern):
    model = tiny(pattern)
    frames = 5
    ids = grid(2, frames)
    full = model(ids)
    rows = model.pattern.layout(model.row_grid(ids))  # (B, S, m): what a decoder feeds
    state = model.new_state(2, frames)
    with torch.no_grad():
        h = torch.cat(
            [model.global_stack(model.embed_steps(rows[:, s : s + 1]), state.global_cache)
             for s in range(rows.shape[1])],
            dim=1,
        )  # fmt: skip
    cached = model.head_logits(model.pattern.readback(h, frames, N_Q))
    torch.testing.assert_close(cached.padded(0.0), full.padded(0.0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_tiny_model_overfits_a_handful_of_sequences(pattern):
    torch.manual_seed(0)
    model = tiny(pattern, continuous_dim=None).train()
    ids = grid(4, 12, generator=torch.Generator().manual_seed(1))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):
        result = model.loss(model(ids), ids)
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
        accuracy = (result.accuracy * result.tokens).sum() / result.tokens.sum()
        if accuracy >= 0.99:
            break
    assert accuracy >= 0.99, f"{pattern}: accuracy {accuracy:.3f}, loss {result.loss:.3f}"


def test_loss_masks_and_shifts():
    model = tiny()
    ids = grid(2, 6)
    out = model(ids)
    mask = torch.zeros(2, 6, N_Q, dtype=torch.bool)
    mask[:, 3, 1] = True  # one token per sequence: codebook 1 of frame 3, predicted by row 2
    result = model.loss(out, ids, mask)
    target = model.targets_to_local(ids)[:, 3, 1]
    expected = torch.nn.functional.cross_entropy(out.rest[:, 2, 0], target)
    torch.testing.assert_close(result.loss, expected)
    assert result.tokens.tolist() == [0, 2, 0] and result.per_codebook[0] == 0


def test_parameter_counts_and_config_round_trip():
    model = tiny(local_context="every", local_weights_per_step=True)
    counts = model.parameter_counts()
    assert counts["total"] == sum(v for k, v in counts.items() if k != "total")
    assert counts["local"] > 0 and tiny("flat").parameter_counts()["local"] == 0
    rebuilt = build_module(model.config())
    rebuilt.load_state_dict(model.state_dict())
    ids = grid(1, 4)
    torch.testing.assert_close(rebuilt.eval()(ids).padded(0.0), model(ids).padded(0.0))
    assert rebuilt.local_config.weights_per_step == N_Q


def test_a_grown_vocabulary_only_appends_rows():
    small = tiny()
    grown_vocab = VOCAB.extend(modalities={"semantic": 4}, tasks=["vc"])
    grown = MultiScaleLM.from_vocabulary(grown_vocab, global_config=GLOBAL, local_config=LOCAL)
    V = VOCAB.size
    assert torch.equal(grown.id_to_local[:, :V], small.id_to_local)
    assert torch.equal(grown._rows[:, :V], small._rows)
    assert grown.embed.num_embeddings > small.embed.num_embeddings


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_selected_rows_give_the_same_logits_loss_and_gradients(pattern):
    torch.manual_seed(0)
    model = tiny(pattern).train()
    ids = grid(2, 9)
    loss_mask = torch.zeros(ids.shape, dtype=torch.bool)
    loss_mask[0, 5:] = True  # a target segment at the end of each sequence
    loss_mask[1, 3:7] = True
    rows = model.loss_rows(loss_mask)  # (B, F)
    assert rows.tolist()[0] == [False] * 4 + [True] * 4 + [False]
    assert rows.tolist()[1] == [False] * 2 + [True] * 4 + [False] * 3

    dense = model(ids)
    packed = model(ids, rows=rows)
    assert packed.first.shape == (1, int(rows.sum()), dense.first.shape[-1])
    torch.testing.assert_close(packed.first[0], dense.first[rows], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(packed.rest[0], dense.rest[rows], atol=1e-5, rtol=1e-5)

    full = model.loss(dense, ids, loss_mask)
    part = model.loss(packed, ids, loss_mask, rows=rows)
    torch.testing.assert_close(part.loss, full.loss)
    torch.testing.assert_close(part.accuracy, full.accuracy)
    assert part.tokens.tolist() == full.tokens.tolist()
    grads = torch.autograd.grad(full.loss, list(model.parameters()), allow_unused=True)
    grads_part = torch.autograd.grad(part.loss, list(model.parameters()), allow_unused=True)
    for g, h in zip(grads, grads_part, strict=True):
        if g is None:
            assert h is None or not h.any()
        else:
            torch.testing.assert_close(h, g, atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="last row"):
        model.loss(packed, ids, loss_mask, rows=torch.ones_like(rows))


def test_load_grown_keeps_every_old_logit_and_refuses_another_architecture():
    small = tiny().eval()
    grown_vocab = VOCAB.extend(tasks=["inpaint"], segments=["masked"])
    big = MultiScaleLM.from_vocabulary(grown_vocab, global_config=GLOBAL, local_config=LOCAL,
                                       continuous_dim=D_C).eval()  # fmt: skip
    fresh = big.embed.weight[VOCAB.size :].clone()
    assert sorted(big.load_grown(small.state_dict())) == [
        "embed.weight",
        "head0.weight",
        "local_embed.weight",
    ]
    ids = grid(2, 7)
    a, b = small(ids), big(ids)
    h0 = a.first.shape[-1]
    assert b.first.shape[-1] == h0 + 3  # <inpaint_task>, <masked_start>, <masked_end>
    torch.testing.assert_close(b.first[..., :h0], a.first)
    torch.testing.assert_close(b.rest, a.rest)
    assert torch.equal(big.embed.weight[-3:], fresh[-3:])  # new rows keep their initialisation
    wider = MultiScaleLM.from_vocabulary(grown_vocab, global_config=TransformerConfig(width=48, depth=2, heads=2),
                                         local_config=LOCAL, continuous_dim=D_C)  # fmt: skip
    with pytest.raises(ValueError, match="not a grown vocabulary of the same architecture"):
        wider.load_grown(small.state_dict())
