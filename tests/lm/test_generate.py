"""Generation: cached equals uncached, codebook ranges, CFG, max/min frames, overfit recall,
frames handed to ``on_frames`` as they complete.

Everything is in memory: a tiny vocabulary (se and tts, 3 codebooks x 16 codes), enhancement
sequences of random codes (``build_sequence``), a tiny random ``MultiScaleLM`` per pattern.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_codec.data.token_batch import collate_sequences
from lit_codec.lm import CodecInfo, build_sequence, load_templates, vocabulary_for
from lit_codec.lm.generate import FrameChunk, GenerationConfig, Prefix, generate, sample_logits
from lit_codec.nn import MultiScaleLM, TransformerConfig
from lit_codec.nn.codebook_patterns import PATTERNS

N_Q, CODES = 3, 16
TEMPLATES = load_templates()
TASKS = {t: TEMPLATES[t] for t in ("se", "tts")}
VOCAB = vocabulary_for(TASKS, CodecInfo("tiny", 8000, 1000.0, N_Q, CODES), {"phone": 8})
AUDIO_START, AUDIO_END = VOCAB.segment_ids("audio")


def network(pattern: str = "multiscale", seed: int = 0, **kwargs) -> MultiScaleLM:
    torch.manual_seed(seed)
    return MultiScaleLM.from_vocabulary(
        VOCAB,
        pattern=pattern,
        global_config=TransformerConfig(width=32, depth=2, heads=2),
        local_config=TransformerConfig(width=32, depth=1, heads=2),
        **kwargs,
    ).eval()


def se_sequences(frames=(3, 5), seed: int = 0):
    """Enhancement sequences: prefixes of different lengths (noisy segment as long as target)."""
    rng = np.random.default_rng(seed)
    return [
        build_sequence(VOCAB, TASKS["se"], {"noisy_codes": rng.integers(0, CODES, (f, N_Q)),
                                            "codes": rng.integers(0, CODES, (f, N_Q))})
        for f in frames
    ]  # fmt: skip


def check_codes(result, max_frames: int) -> None:
    """Codes lie in their codebooks, ids in their codebook's id range, lengths <= max_frames."""
    assert result.codes.shape[1] == int(result.lengths.max()) <= max_frames
    assert (result.lengths <= max_frames).all()
    for i, (n, seq) in enumerate(zip(result.lengths.tolist(), result.sequence_lengths.tolist())):
        codes = result.codes[i, :n]
        assert ((codes >= 0) & (codes < CODES)).all() and (result.codes[i, n:] == -1).all()
        closing = 2 * int(result.finished[i])  # <audio_end> <end>
        generated = result.ids[i, seq - n - closing : seq - closing]
        for k in range(N_Q):
            start, stop = VOCAB.codebook_range(k)
            assert ((generated[:, k] >= start) & (generated[:, k] < stop)).all()
        if result.finished[i]:
            end = [VOCAB.special("<end>")] + [VOCAB.pad_id] * (N_Q - 1)
            assert result.ids[i, seq - 2].tolist() == [AUDIO_END] + [VOCAB.pad_id] * (N_Q - 1)
            assert result.ids[i, seq - 1].tolist() == end
        assert (result.ids[i, seq:] == VOCAB.pad_id).all()


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_cached_generation_equals_full_forward(pattern):
    model = network(pattern)
    prefix = Prefix.from_sequences(se_sequences(), VOCAB)
    assert prefix.lengths.tolist() == [8, 10]
    config = GenerationConfig(temperature=1.5, top_k=12, top_p=0.95, max_frames=6, seed=3)
    cached = generate(model, VOCAB, prefix, config)
    full = generate(model, VOCAB, prefix, GenerationConfig(**{**vars(config), "use_cache": False}))
    assert torch.equal(cached.ids, full.ids) and torch.equal(cached.codes, full.codes)
    assert torch.equal(cached.lengths, full.lengths)
    check_codes(cached, 6)
    # the prefixes come back unchanged, each at its own length (left-aligned)
    for i, n in enumerate(prefix.lengths.tolist()):
        assert torch.equal(cached.ids[i, :n], prefix.ids[i, :n])


@pytest.mark.parametrize("every", [False, True], ids=["first", "every-per-step"])
def test_cached_local_stack_variants_equal_full_forward(every):
    kwargs = dict(local_context="every", local_weights_per_step=True) if every else {}
    model = network("multiscale", seed=2, **kwargs)
    prefix = Prefix.from_sequences(se_sequences(), VOCAB)
    config = GenerationConfig(temperature=1.5, max_frames=6, seed=5)
    cached = generate(model, VOCAB, prefix, config)
    full = generate(model, VOCAB, prefix, GenerationConfig(**{**vars(config), "use_cache": False}))
    assert torch.equal(cached.ids, full.ids)


def collect_chunks(result, chunks: list[FrameChunk]) -> list[torch.Tensor]:
    """Check the chunks of each sample (in order, contiguous, at most one frame each: handed
    over as soon as complete, one ``ended`` chunk last) and return their concatenations."""
    out = []
    for i in range(len(result.lengths)):
        mine = [c for c in chunks if c.sample == i]
        assert [c.ended for c in mine] == [False] * (len(mine) - 1) + [True]
        starts = np.cumsum([0] + [len(c.codes) for c in mine[:-1]]).tolist()
        assert [c.start for c in mine] == starts
        assert all(len(c.codes) <= 1 for c in mine)
        out.append(torch.cat([c.codes for c in mine]))
    return out


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_on_frames_hands_over_each_complete_frame_once_up_to_the_end(pattern):
    model = network(pattern, seed=3)
    prefix = Prefix.from_sequences(se_sequences(), VOCAB)  # lengths 8 and 10
    ended = []
    for seed in range(6):  # a random model ends a target now and then (1 of 17 tokens)
        chunks: list[FrameChunk] = []
        config = GenerationConfig(temperature=2.0, max_frames=7, seed=seed)
        result = generate(model, VOCAB, prefix, config, on_frames=chunks.append)
        for i, codes in enumerate(collect_chunks(result, chunks)):
            n = int(result.lengths[i])
            assert codes.dtype == torch.long and codes.shape == (n, N_Q)
            assert torch.equal(codes, result.codes[i, :n])  # nothing from <X_end> on
        ended += result.finished.tolist()
        # the same chunks with the full forward
        full_chunks: list[FrameChunk] = []
        full = GenerationConfig(**{**vars(config), "use_cache": False})
        generate(model, VOCAB, prefix, full, on_frames=full_chunks.append)
        assert [(c.sample, c.start, c.ended) for c in chunks] == [
            (c.sample, c.start, c.ended) for c in full_chunks
        ]
    assert any(ended) and not all(ended)  # both ways of stopping were seen


def test_on_frames_with_guidance_and_an_audio_prompt():
    seqs = se_sequences(frames=(4, 6), seed=1)
    prefix = Prefix.from_sequences(seqs, VOCAB, prompt_frames=2)
    chunks: list[FrameChunk] = []
    config = GenerationConfig(cfg_coef=2.0, max_frames=5, min_frames=5, seed=1)
    model = network(seed=4)
    result = generate(model, VOCAB, prefix, config, on_frames=chunks.append)
    assert not result.finished.any() and result.lengths.tolist() == [5, 5]
    assert sorted({c.sample for c in chunks}) == [0, 1]  # the unconditional rows are not samples
    for i, codes in enumerate(collect_chunks(result, chunks)):
        assert torch.equal(codes, result.codes[i])  # the prompt is not handed over again
    # the loop runs in inference mode, but what comes out is ordinary tensors, and the model
    # (its cached rotary table included) still decodes with gradients afterwards
    tensors = [result.codes, result.ids, result.lengths, *(c.codes for c in chunks)]
    assert not any(t.is_inference() for t in tensors)
    stack = model.local_stack
    x = torch.randn(2, 1, stack.config.width, requires_grad=True)
    stack(x, stack.new_cache(2, N_Q)).sum().backward()
    assert x.grad is not None


@pytest.mark.parametrize("pattern", ["multiscale", "delay"])
def test_guidance_cached_equals_full_and_cfg_1_runs_the_conditional_batch_alone(pattern):
    model = network(pattern, seed=1)
    prefix = Prefix.from_sequences(se_sequences(), VOCAB)
    base = dict(max_frames=5, seed=7)
    batches: list[int] = []
    hook = model.global_stack.register_forward_hook(lambda m, a, out: batches.append(a[0].shape[0]))
    guided = generate(model, VOCAB, prefix, GenerationConfig(cfg_coef=3.0, **base))
    assert set(batches) == {4}
    batches.clear()
    plain = generate(model, VOCAB, prefix, GenerationConfig(cfg_coef=1.0, **base))
    hook.remove()
    assert set(batches) == {2}  # no unconditional half
    full = generate(model, VOCAB, prefix, GenerationConfig(cfg_coef=3.0, use_cache=False, **base))
    assert torch.equal(guided.ids, full.ids)
    check_codes(guided, 5)
    # cfg_coef = 1 is plain conditional sampling: the same without any condition mask
    unmasked = Prefix(prefix.ids, prefix.lengths)
    assert torch.equal(plain.ids, generate(model, VOCAB, unmasked, GenerationConfig(**base)).ids)
    # cfg_coef = 0 samples from the unconditional half alone: the null-condition prefix
    null_ids = prefix.ids.masked_fill(prefix.condition_mask[..., None], VOCAB.pad_id)
    uncond = generate(model, VOCAB, prefix, GenerationConfig(cfg_coef=0.0, **base))
    alone = generate(model, VOCAB, Prefix(null_ids, prefix.lengths), GenerationConfig(**base))
    assert torch.equal(uncond.codes, alone.codes)


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_continuous_conditions_and_guidance_cached_equal_full(pattern):
    model = network(pattern, continuous_dim=4)
    base = Prefix.from_sequences(se_sequences(), VOCAB)
    vectors = torch.randn(*base.condition_mask.shape, 4)  # (B, P, 4): the noisy frames as vectors
    prefix = Prefix(base.ids, base.lengths, base.condition_mask, vectors, base.condition_mask)
    config = GenerationConfig(max_frames=3, cfg_coef=2.0, greedy=True)  # greedy: sensitive
    cached = generate(model, VOCAB, prefix, config)
    full = generate(model, VOCAB, prefix, GenerationConfig(**{**vars(config), "use_cache": False}))
    assert torch.equal(cached.ids, full.ids)
    check_codes(cached, 3)


def test_max_and_min_frames_are_respected():
    model = network()
    prefix = Prefix.from_sequences(se_sequences(), VOCAB)
    never = generate(model, VOCAB, prefix, GenerationConfig(max_frames=4, min_frames=4))
    assert never.lengths.tolist() == [4, 4] and not never.finished.any()
    assert never.codes.shape == (2, 4, N_Q)
    assert never.sequence_lengths.tolist() == [8 + 4, 10 + 4]
    check_codes(never, 4)
    for seed in range(2):
        result = generate(model, VOCAB, prefix, GenerationConfig(max_frames=8, min_frames=3,
                                                                 temperature=3.0, seed=seed))  # fmt: skip
        check_codes(result, 8)
        assert (result.lengths >= 3).all()


def test_sample_logits_restricts_and_truncates(generator):
    logits = torch.randn(64, 10, generator=generator)
    logits[:, 7:] = float("-inf")
    best = logits.argmax(-1)
    assert torch.equal(sample_logits(logits, top_k=1, generator=generator), best)
    assert torch.equal(sample_logits(logits, top_p=1e-6, generator=generator), best)
    assert torch.equal(sample_logits(logits, greedy=True), best)
    drawn = sample_logits(logits, temperature=5.0, generator=generator)
    assert (drawn < 7).all() and len(drawn.unique()) > 1
    top3 = logits.topk(3, dim=-1).indices
    drawn = sample_logits(logits, temperature=5.0, top_k=3, generator=generator)
    assert (top3 == drawn[:, None]).any(-1).all()
    # top-k and top-p together: the nucleus is cut among the k best (no full sort)
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log().expand(4000, 4)
    drawn = sample_logits(probs, top_k=3, top_p=0.7, generator=generator)
    share = torch.bincount(drawn, minlength=4) / len(drawn)
    assert share[2:].sum() == 0 and abs(share[0] - 0.5 / 0.8) < 0.03  # renormalised over {0, 1}
    drawn = sample_logits(probs, top_k=3, generator=generator)
    share = torch.bincount(drawn, minlength=4) / len(drawn)
    assert share[3] == 0 and abs(share[2] - 0.15 / 0.95) < 0.03
    # no cut: the distribution itself; a zero-probability index is never drawn
    drawn = sample_logits(torch.tensor([[0.5, 0.3, 0.2, 0.0]]).log().expand(4000, 4),
                          generator=generator)  # fmt: skip
    share = torch.bincount(drawn, minlength=4) / len(drawn)
    assert share[3] == 0 and (share[:3] - torch.tensor([0.5, 0.3, 0.2])).abs().max() < 0.03


def test_prefix_from_a_batch_cuts_at_the_target():
    seqs = se_sequences()
    batch = collate_sequences(seqs, ["a", "b"], VOCAB.pad_id)
    for prompt in (0, 2):
        mine, theirs = Prefix.from_batch(batch, prompt), Prefix.from_sequences(seqs, VOCAB, prompt)
        assert torch.equal(mine.lengths, theirs.lengths)
        assert torch.equal(mine.ids, theirs.ids)
        assert torch.equal(mine.condition_mask, theirs.condition_mask)
    assert (theirs.ids[torch.arange(2), theirs.lengths - 3, 0] == AUDIO_START).all()
    # a prefix must end inside the open target segment
    closed = Prefix(theirs.ids, theirs.lengths - 3)  # cut before <audio_start>
    with pytest.raises(ValueError, match="open segment"):
        generate(network(), VOCAB, closed, GenerationConfig(max_frames=2))
    with pytest.raises(ValueError, match="condition_mask"):
        generate(network(), VOCAB, closed, GenerationConfig(cfg_coef=2.0))


@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_greedy_decoding_of_an_overfitted_model_regenerates_its_targets(pattern):
    seqs = se_sequences(frames=(3, 5), seed=4)
    batch = collate_sequences(seqs, ["a", "b"], VOCAB.pad_id)
    model = network(pattern).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(400):
        result = model.loss(model(batch.ids), batch.ids, batch.loss_mask)
        if (result.accuracy == 1).all() and result.loss < 0.05:
            break
        optimizer.zero_grad()
        result.loss.backward()
        optimizer.step()
    assert (result.accuracy == 1).all(), f"{pattern} did not overfit: {result.accuracy}"
    targets = [torch.as_tensor(VOCAB.codes_from_ids(s.ids[s.target.start : s.target.stop]))
               for s in seqs]  # fmt: skip
    # from <audio_start> (cached and not), and continuing a one-frame audio prompt
    for prompt, use_cache in ((0, True), (0, False), (1, True)):
        prefix = Prefix.from_sequences(seqs, VOCAB, prompt_frames=prompt)
        config = GenerationConfig(greedy=True, max_frames=8, use_cache=use_cache)
        out = generate(model, VOCAB, prefix, config)
        assert out.finished.all() and out.lengths.tolist() == [3 - prompt, 5 - prompt]
        for i, target in enumerate(targets):
            assert torch.equal(out.codes[i, : len(target) - prompt], target[prompt:])
            assert torch.equal(out.ids[i, : len(seqs[i])], torch.as_tensor(seqs[i].ids))
