"""CodecLM: masks, condition dropout, overfitting, non-finite stops, vocabulary checks,
exact resume, DDP equivalence, the LM recipes through the CLI.

Everything is built in memory: a tiny vocabulary (3 codebooks x 16 codes), task sequences
from random codes (``build_sequence`` + ``collate_sequences``), a tiny ``MultiScaleLM``.

Run as a script (``python tests/models/test_codec_lm.py OUT.pt DEVICES``) it is the
DDP-equivalence worker that ``test_ddp_gives_the_loss_of_one_process_with_the_global_batch``
starts (Lightning re-launches the same command for rank 1).
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # run as a script (the DDP worker)
    sys.path.insert(0, str(REPO))

from lit_codec.data.token_batch import TokenBatch, collate_sequences  # noqa: E402
from lit_codec.lm import (  # noqa: E402
    CodecInfo,
    Vocabulary,
    VocabularyMismatch,
    build_sequence,
    load_templates,
    vocabulary_for,
)
from lit_codec.models.codec_gan import NonFiniteLossError  # noqa: E402
from lit_codec.models.codec_lm import (  # noqa: E402
    CodecLM,
    drop_conditions,
    load_network,
)
from lit_codec.nn import MultiScaleLM, TransformerConfig  # noqa: E402

N_Q, CODES, PHONES = 3, 16, 8
TINY_CODEC = CodecInfo("tiny", 8000, 1000.0, N_Q, CODES)
GLOBAL = {"width": 32, "depth": 2, "heads": 2}
LOCAL = {"width": 32, "depth": 1, "heads": 2}


# --------------------------------------------------------------------------- helpers
def tiny_vocabulary(tasks=("se", "tts"), codec: CodecInfo = TINY_CODEC):
    templates = load_templates()
    chosen = {t: templates[t] for t in tasks}
    return vocabulary_for(chosen, codec, {"phone": PHONES}), chosen


def sample(task: str, rng: np.random.Generator, frames: int, codes: int = CODES) -> dict:
    target = rng.integers(0, codes, (frames, N_Q))
    if task == "se":
        return {"noisy_codes": rng.integers(0, codes, (frames, N_Q)), "codes": target}
    if task == "tts":
        return {"phones": rng.integers(0, PHONES, frames // 2 + 1),
                "prompt_codes": rng.integers(0, codes, (2, N_Q)), "codes": target}  # fmt: skip
    raise ValueError(task)


def sequences(vocab, templates, tasks, seed=0, frames=(5, 7, 6, 4)):
    rng = np.random.default_rng(seed)
    return [build_sequence(vocab, templates[t], sample(t, rng, f))
            for t, f in zip(tasks, frames)]  # fmt: skip


def collate(vocab, seqs) -> TokenBatch:
    keys = [f"s{i}" for i in range(len(seqs))]
    return collate_sequences(seqs, keys, vocab.pad_id, vocab.special("<embedding>"))


def tiny_network(vocab, seed=0, **kwargs) -> MultiScaleLM:
    torch.manual_seed(seed)
    return MultiScaleLM.from_vocabulary(vocab, global_config=TransformerConfig(**GLOBAL),
                                        local_config=TransformerConfig(**LOCAL), **kwargs)  # fmt: skip


def adamw(lr):
    return lambda params: torch.optim.AdamW(params, lr=lr, weight_decay=0.0)


class Batches(L.LightningDataModule):
    """Fixed batches, in order, one epoch = all of them; ``vocabulary`` as a token data module has."""

    def __init__(
        self, vocabulary: Vocabulary, train: list[TokenBatch], val: list[TokenBatch] | None = None
    ):
        super().__init__()
        self.vocabulary = vocabulary
        self.train, self.val = train, val if val is not None else train[:1]

    def train_dataloader(self):
        return DataLoader(self.train, batch_size=None, shuffle=False)

    def val_dataloader(self):
        return DataLoader(self.val, batch_size=None, shuffle=False)


class Losses(L.Callback):
    def __init__(self):
        self.values: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.values.append(float(trainer.callback_metrics["train/loss"]))


def trainer(max_steps: int, tmp_path=None, **kwargs) -> L.Trainer:
    options = dict(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                   limit_val_batches=0, default_root_dir=tmp_path)  # fmt: skip
    options.update(kwargs)
    return L.Trainer(**options)


def lm_recipe_args(*recipes: str) -> list[str]:
    """``--config`` arguments of LM recipes (each with its ``extends`` chain)."""
    from lit_codec.cli import recipe_chain

    args = []
    for recipe in recipes:
        for _, content in recipe_chain(REPO / "recipes" / "lm" / recipe):
            args += ["--config", yaml.safe_dump(content, sort_keys=False)]
    return args


@pytest.fixture(scope="module")
def token_root(tmp_path_factory) -> Path:
    """Token shards (se, tse) of tiny 8 kHz clips, made with the tiny SEANet codec (1000
    frames/s: a 1 s clip is a 1000-frame target)."""
    from lit_codec.data.token_shards import TokenShardSettings, make_token_shards
    from tests.data.token_factory import export_tiny_codec, make_audio_shards

    root = tmp_path_factory.mktemp("lm_tokens")
    audio = make_audio_shards(root, valid_fraction=0.25, split_by="speaker")
    out = root / "tokens"
    make_token_shards(TokenShardSettings(str(audio), str(out), codec=str(export_tiny_codec(root / "codec.safetensors")),
                                         tasks=("se", "tse"), shard_max_samples=4, workers=1, progress=False))  # fmt: skip
    return out


def data_args(root: Path, tasks: str = '{"se": 1.0}') -> list[str]:
    """The fixture's shards, tasks it holds, a budget its sequences fit, no worker process."""
    return ["--data.root", str(root), "--data.tasks", tasks, "--data.max_tokens", "7000",
            "--data.num_workers", "0"]  # fmt: skip


def shard_hash(root: Path) -> str:
    import json

    return json.loads((root / "index.json").read_text())["vocab_hash"]


# --------------------------------------------------------------------------- masks and dropout
@pytest.mark.parametrize("loss_on", ["target", "all"])
def test_the_loss_covers_exactly_the_chosen_tokens(loss_on):
    vocab, templates = tiny_vocabulary()
    seqs = sequences(vocab, templates, ["se", "tts", "se", "tts"])
    batch = collate(vocab, seqs)
    for i, seq in enumerate(seqs):  # the target: its content, its end marker, the final <end>
        expected = np.zeros_like(seq.loss_mask)
        span = seq.target
        expected[span.start : span.stop] = True
        expected[span.stop, 0] = expected[len(seq) - 1, 0] = True
        assert np.array_equal(batch.loss_mask[i, : len(seq)].numpy(), expected)
        assert not batch.loss_mask[i, len(seq) :].any()
    model = CodecLM(tiny_network(vocab), vocabulary=vocab, loss_on=loss_on)
    mask = model.loss_mask(batch)
    assert torch.equal(mask, batch.loss_mask if loss_on == "target" else batch.mask)
    # the gradient reaches exactly the logits of the counted tokens (row t predicts t + 1)
    output = model(batch)
    output.first.retain_grad()
    output.rest.retain_grad()
    model.network.loss(output, batch.ids, mask).loss.backward()
    touched = torch.cat((output.first.grad.abs().sum(-1, keepdim=True),
                         output.rest.grad.abs().sum(-1)), dim=-1) > 0  # (B, F, n_q)  # fmt: skip
    assert torch.equal(touched[:, :-1], mask[:, 1:])
    assert not touched[:, -1].any()


def test_condition_dropout_replaces_exactly_the_condition_frames():
    vocab, templates = tiny_vocabulary()
    seqs = sequences(vocab, templates, ["se", "tts", "se", "tts"] * 4, frames=(5, 6) * 8)
    batch = collate(vocab, seqs)
    model = CodecLM(tiny_network(vocab), vocabulary=vocab, condition_dropout=0.5, seed=3)
    draws = []
    for seen in range(3):
        model.batches_seen = seen
        draws.append(model.draw_condition_dropout(batch))
    model.batches_seen = 1
    assert torch.equal(model.draw_condition_dropout(batch), draws[1])  # seeded by (seed, batch)
    assert not torch.equal(draws[0], draws[1])
    drop = draws[0]
    assert 0 < int(drop.sum()) < len(batch)
    dropped = drop_conditions(batch, drop, vocab.pad_id)
    for i, seq in enumerate(seqs):
        condition = np.zeros(batch.frames, dtype=bool)
        for span in seq.segments:
            if not span.target:
                condition[span.start : span.stop] = True
        assert np.array_equal(batch.condition_mask[i].numpy(), condition)
        changed = (dropped.ids[i] != batch.ids[i]).any(-1).numpy()
        if drop[i]:
            assert (dropped.ids[i][condition] == vocab.pad_id).all()
            assert not dropped.mask[i][condition].any()
            keep = ~condition  # markers, task, target, padding: unchanged
            assert torch.equal(dropped.ids[i][keep], batch.ids[i][keep])
            assert changed[condition].any() and not changed[keep].any()
        else:
            assert torch.equal(dropped.ids[i], batch.ids[i])
            assert torch.equal(dropped.mask[i], batch.mask[i])
    assert torch.equal(dropped.loss_mask, batch.loss_mask)  # the target is never touched


def test_condition_dropout_empties_continuous_condition_frames():
    templates = load_templates({"tasks": [{"name": "tta", "segments": [
        {"name": "text", "modality": "embedding", "tokenizer": "text_t5", "source": "emb"},
        {"name": "audio", "modality": "codec", "tokenizer": "codec", "source": "codes", "target": True}]}]})  # fmt: skip
    vocab = vocabulary_for(templates, TINY_CODEC)
    rng = np.random.default_rng(0)
    seqs = [build_sequence(vocab, templates["tta"], {"emb": rng.normal(size=(3, 4)).astype(np.float32),
                                                      "codes": rng.integers(0, CODES, (4, N_Q))})
            for _ in range(2)]  # fmt: skip
    batch = collate(vocab, seqs)
    assert batch.is_continuous.sum() == 6
    out = drop_conditions(batch, torch.tensor([True, False]), vocab.pad_id)
    assert not out.is_continuous[0].any() and (out.continuous[0] == 0).all()
    assert torch.equal(out.is_continuous[1], batch.is_continuous[1])
    assert torch.equal(out.continuous[1], batch.continuous[1])
    # the network reads the null condition (no continuous frame marked)
    model = CodecLM(tiny_network(vocab, continuous_dim=4), vocabulary=vocab)
    assert torch.isfinite(model(out).first).all()


def test_codebook_weights():
    vocab, templates = tiny_vocabulary()
    batch = collate(vocab, sequences(vocab, templates, ["se", "tts", "se", "tts"]))
    network = tiny_network(vocab)
    output = network(batch.ids)
    plain = network.loss(output, batch.ids, batch.loss_mask)
    same = network.loss(output, batch.ids, batch.loss_mask, codebook_weights=torch.ones(N_Q))
    torch.testing.assert_close(same.loss, plain.loss)
    torch.testing.assert_close(same.accuracy, plain.accuracy)
    w = torch.tensor([5.0, 1.0, 0.5])
    weighted = network.loss(output, batch.ids, batch.loss_mask, codebook_weights=w)
    expected = (w * plain.per_codebook * plain.tokens).sum() / (w * plain.tokens).sum()
    torch.testing.assert_close(weighted.loss, expected)
    model = CodecLM(
        network, vocabulary=vocab, codebook_weights=[2, 1, 0.5], first_codebook_weight=5
    )
    assert torch.equal(model.codebook_weight_tensor(), w)
    assert CodecLM(network, vocabulary=vocab).codebook_weight_tensor() is None


# --------------------------------------------------------------------------- training
@pytest.mark.slow
def test_a_tiny_model_overfits_a_handful_of_sequences(tmp_path):
    vocab, templates = tiny_vocabulary()
    batch = collate(vocab, sequences(vocab, templates, ["se", "tts", "se", "tts"]))
    model = CodecLM(tiny_network(vocab), adamw(1e-2), vocabulary=vocab, gradient_clip=1.0)
    trainer(120, tmp_path).fit(model, datamodule=Batches(vocab, [batch]))
    model.eval()
    with torch.no_grad():
        result = model.network.loss(model(batch), batch.ids, batch.loss_mask)
    accuracy = float((result.accuracy * result.tokens).sum() / result.tokens.sum())
    assert accuracy >= 0.99, (accuracy, result.accuracy)


def test_nonfinite_loss_stops_with_a_clear_error(tmp_path):
    vocab, templates = tiny_vocabulary()
    batch = collate(vocab, sequences(vocab, templates, ["se", "tts", "se", "tts"]))
    network = tiny_network(vocab)
    with torch.no_grad():
        network.head0.weight[0, 0] = float("nan")
    model = CodecLM(network, adamw(1e-3), vocabulary=vocab, max_nonfinite_steps=3)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    with pytest.raises(NonFiniteLossError, match="not finite for 3 optimizer steps in a row"):
        trainer(10, tmp_path).fit(model, datamodule=Batches(vocab, [batch]))
    assert model.nonfinite_steps == 3
    for key, value in network.state_dict().items():  # every step skipped: nothing moved
        assert torch.equal(value, before[key]) or torch.isnan(value).any(), key


def test_the_checkpoint_holds_the_vocabulary_and_refuses_another(tmp_path):
    vocab, templates = tiny_vocabulary()
    batch = collate(vocab, sequences(vocab, templates, ["se", "tts", "se", "tts"]))
    factory = functools.partial(MultiScaleLM, global_config=GLOBAL, local_config=LOCAL)
    model = CodecLM(factory, adamw(1e-3))  # the vocabulary comes from the data module
    assert model.network is None and "built from the data's vocabulary" in model.describe()
    fit = trainer(2, tmp_path)
    fit.fit(model, datamodule=Batches(vocab, [batch]))
    assert model.network.vocab_size == vocab.size and model.vocabulary == vocab
    assert vocab.hash in model.describe() and "parameters (M)" in model.describe()
    path = tmp_path / "lm.ckpt"
    fit.save_checkpoint(path)
    saved = torch.load(path, weights_only=True)["lit_codec"]
    assert saved["vocab_hash"] == vocab.hash == saved["vocabulary"]["hash"]
    assert Vocabulary.from_schema(saved["vocabulary"]) == vocab
    loaded = CodecLM.load_from_checkpoint(
        path, network=factory
    )  # the network built from its vocabulary
    assert loaded.vocabulary == vocab and torch.equal(
        loaded.network.head0.weight, model.network.head0.weight
    )
    network, loaded_vocab = load_network(path)  # from the checkpoint alone
    assert loaded_vocab == vocab
    for key, value in model.network.state_dict().items():
        assert torch.equal(network.state_dict()[key], value), key

    other, _ = tiny_vocabulary(("se",))  # another task set: another vocabulary
    assert other.hash != vocab.hash
    batch_other = collate(other, sequences(other, _, ["se"] * 4))
    resumed = CodecLM(factory, adamw(1e-3))
    with pytest.raises(
        VocabularyMismatch
    ) as err:  # data of another vocabulary than the checkpoint's
        trainer(4, tmp_path).fit(resumed, datamodule=Batches(other, [batch_other]), ckpt_path=path)
    assert other.hash in str(err.value) and vocab.hash in str(err.value)
    # the vocabulary argument against the data's
    with pytest.raises(VocabularyMismatch) as err:
        trainer(1, tmp_path).fit(
            CodecLM(factory, vocabulary=vocab), datamodule=Batches(other, [batch_other])
        )
    assert other.hash in str(err.value) and vocab.hash in str(err.value)
    schema = tmp_path / "vocab.json"
    vocab.save(schema)
    assert CodecLM(factory, vocabulary=str(schema)).build_network().vocab_size == vocab.size


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_resuming_a_checkpoint_gives_the_uninterrupted_loss_curve(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    vocab, templates = tiny_vocabulary()
    batches = [
        collate(vocab, sequences(vocab, templates, ["se", "tts", "tts", "se"], seed=s))
        for s in range(3)
    ]
    factory = functools.partial(MultiScaleLM, global_config=GLOBAL, local_config=LOCAL)

    def module():
        scheduler = functools.partial(torch.optim.lr_scheduler.OneCycleLR, max_lr=3e-3, total_steps=6,
                                      pct_start=0.3, cycle_momentum=False)  # fmt: skip
        return CodecLM(factory, adamw(3e-3), scheduler, condition_dropout=0.5, seed=1)

    data = Batches(vocab, batches)
    whole = Losses()
    trainer(6, tmp_path / "a", callbacks=[whole]).fit(module(), datamodule=data)
    first = Losses()  # 3 steps = one epoch, saved by the checkpoint callback as a run saves it
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_last=True)
    trainer(3, tmp_path / "b", callbacks=[first, saver], enable_checkpointing=True).fit(
        module(), datamodule=data
    )
    second = Losses()
    resumed = module()
    saver = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=3, save_last=True)
    trainer(6, tmp_path / "b", callbacks=[second, saver], enable_checkpointing=True).fit(
        resumed, datamodule=data, ckpt_path=tmp_path / "ckpt" / "last.ckpt"
    )
    assert len(whole.values) == 6 and len(first.values) == 3 and len(second.values) == 3
    assert first.values + second.values == whole.values
    assert resumed.batches_seen == 6


def test_validation_logs_per_task_losses_and_accuracies(tmp_path):
    vocab, templates = tiny_vocabulary()
    batch = collate(vocab, sequences(vocab, templates, ["se", "tts", "se", "tts"]))
    model = CodecLM(tiny_network(vocab), vocabulary=vocab)
    run = trainer(1, tmp_path, limit_val_batches=None)
    metrics = run.validate(model, datamodule=Batches(vocab, [batch], [batch]), verbose=False)[0]
    with torch.no_grad():
        output = model(batch)
    for task in ("se", "tts"):
        rows = torch.tensor([i for i, t in enumerate(batch.tasks) if t == task])
        from lit_codec.nn.multiscale_lm import LMOutput

        expected = model.network.loss(LMOutput(output.first[rows], output.rest[rows]), batch.ids[rows],
                                      batch.loss_mask[rows])  # fmt: skip
        assert metrics[f"val/{task}/loss"] == pytest.approx(float(expected.loss), rel=1e-5)
        for k in range(N_Q):
            assert metrics[f"val/{task}/acc@cb{k}"] == pytest.approx(
                float(expected.accuracy[k]), abs=1e-6
            )
    overall = model.network.loss(output, batch.ids, batch.loss_mask)
    assert metrics["val/loss"] == pytest.approx(float(overall.loss), rel=1e-5)
    # the majority (unigram) floor: the most frequent target id of each codebook
    targets = batch.ids[:, 1:][batch.loss_mask[:, 1:]].view(-1)  # C order: codebook varies fastest
    columns = batch.loss_mask[:, 1:].nonzero()[:, 2]
    for k in range(N_Q):
        values = targets[columns == k]
        top = torch.unique(values, return_counts=True)[1].max()
        assert metrics[f"val/majority_acc@cb{k}"] == pytest.approx(
            float(top) / len(values), abs=1e-6
        )


def test_validation_media_decodes_target_segments(tmp_path):
    from lightning.pytorch.loggers import CSVLogger

    from lit_codec.callbacks.lm_media import LMValidationMedia
    from tests.tiny_codecs import tiny_seanet_codec

    codec = tiny_seanet_codec()  # 3 x 32 codes, hop 8, 8 kHz
    path = codec.export(tmp_path / "codec.safetensors")
    from lit_codec import Codec

    info = CodecInfo.from_codec(Codec.from_checkpoint(path))
    vocab, templates = tiny_vocabulary(codec=info)
    rng = np.random.default_rng(0)
    seqs = [build_sequence(vocab, templates[t], sample(t, rng, 6, codes=32)) for t in ("se", "tts")]
    batch = collate(vocab, seqs)
    model = CodecLM(tiny_network(vocab), vocabulary=vocab)
    logger = CSVLogger(tmp_path / "logs")
    run = trainer(1, tmp_path, logger=logger, limit_val_batches=None,
                  callbacks=[LMValidationMedia(str(path), num_clips=2)])  # fmt: skip
    run.validate(model, datamodule=Batches(vocab, [batch], [batch]), verbose=False)
    wavs = sorted(p.name for p in Path(logger.log_dir).rglob("*.wav"))
    assert wavs == ["audio_se_clip0_predicted.wav", "audio_se_clip0_reference.wav",
                    "audio_tts_clip1_predicted.wav", "audio_tts_clip1_reference.wav"]  # fmt: skip
    import soundfile as sf

    audio, rate = sf.read(next(Path(logger.log_dir).rglob("audio_se_clip0_reference.wav")))
    assert rate == 8000 and len(audio) == 6 * 8
    # another codec than the vocabulary's: a warning, no audio
    other = tiny_seanet_codec(seed=1).export(tmp_path / "other.safetensors")
    callback = LMValidationMedia(str(other))
    with pytest.warns(UserWarning, match="is not the codec of the vocabulary"):
        trainer(1, tmp_path, logger=CSVLogger(tmp_path / "logs2"), limit_val_batches=None,
                callbacks=[callback]).validate(model, datamodule=Batches(vocab, [batch], [batch]), verbose=False)  # fmt: skip
    assert not list((tmp_path / "logs2").rglob("*.wav"))


# --------------------------------------------------------------------------- recipes
# every recipe of recipes/lm but the task templates and the FSDP delta (applied to others below)
LM_RECIPES = sorted(p.relative_to(REPO / "recipes" / "lm").as_posix()
                    for p in (REPO / "recipes" / "lm").rglob("*.yaml")
                    if p.name not in ("tasks.yaml", "fsdp.yaml"))  # fmt: skip


@pytest.mark.parametrize("recipe", LM_RECIPES)
def test_the_lm_recipes_build(recipe, token_root, tmp_path):
    from lit_codec.cli import run_lightning
    from lit_codec.data import TokenShardDataModule

    text = (REPO / "recipes" / "lm" / recipe).read_text()
    assert text.startswith("#") and "Run:" in text and "Result:" in text
    args = [
        *lm_recipe_args(recipe),
        "--trainer.default_root_dir",
        str(tmp_path),
        "--trainer.logger",
        "false",
    ]
    cli = run_lightning(args, run=False)  # the recipe as written: no shard is read
    data = cli.datamodule
    assert isinstance(data, TokenShardDataModule) and data.root is None and data.vocabulary is None
    assert data.tasks and all(w > 0 for w in data.tasks.values())
    with pytest.raises(ValueError, match="set data.root"):
        data.setup("fit")
    cli = run_lightning([*args, *data_args(token_root, '{"se": 1.0, "tse": 1.0}')], run=False)
    model = cli.model
    assert isinstance(model, CodecLM) and model.network is None  # built from the data's vocabulary
    cli.datamodule.setup("fit")
    model.use_vocabulary(cli.datamodule.vocabulary, "the data")
    if recipe == "finetune_new_task.yaml":  # starts from a trained LM: see the fine-tuning test
        assert model.init_from.endswith("last.ckpt")
    elif recipe != "se/uniaudio.yaml":  # 16 x 768: not built here
        network = model.build_network()
        assert network.vocab_size == cli.datamodule.vocabulary.size


def test_the_fsdp_delta_applies_to_an_lm_recipe(tmp_path):
    from lightning.pytorch.strategies import ModelParallelStrategy

    from lit_codec.cli import run_lightning

    cli = run_lightning([*lm_recipe_args("se/debug.yaml", "fsdp.yaml"), "--trainer.default_root_dir",
                         str(tmp_path), "--trainer.logger", "false", "--trainer.devices", "1"], run=False)  # fmt: skip
    assert isinstance(cli.trainer.strategy, ModelParallelStrategy)


def _checkpoint_every(steps: int) -> list[str]:
    return ["--config", yaml.safe_dump({"trainer": {"callbacks": [
        {"class_path": "lit_codec.callbacks.GeneratorStepCheckpoint",
         "init_args": {"every_n_generator_steps": 0, "every_n_train_steps": steps, "save_last": True}}]}})]  # fmt: skip


@pytest.mark.slow
def test_finetuning_to_a_new_task_keeps_old_ids_and_outputs_then_trains(token_root, tmp_path):
    """recipes/lm/finetune_new_task.yaml end to end on tiny shards: a base LM trained on se,
    shards of the new task `inpaint` made with its vocabulary grown, and the fine-tune."""
    import json

    from lit_codec.cli import main, run_lightning
    from lit_codec.data.token_shards import TokenShardSettings, make_token_shards
    from lit_codec.models.codec_lm import load_network

    small = ["--model.init_args.network.init_args.global_config", '{"width": 32, "depth": 2, "heads": 2}',
             "--model.init_args.network.init_args.local_config", '{"width": 16, "depth": 1, "heads": 2}']  # fmt: skip
    quiet = ["--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
             "--trainer.num_sanity_val_steps", "0", "--trainer.val_check_interval", "2", *_checkpoint_every(2)]  # fmt: skip
    main(["fit", *lm_recipe_args("se/cpu.yaml"), *data_args(token_root), *small, *quiet,
          "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path / "base")])  # fmt: skip
    base_ckpt = tmp_path / "base" / "checkpoints" / "last.ckpt"
    base_net, base_vocab = load_network(base_ckpt)

    settings = json.loads((token_root / "index.json").read_text())["settings"]
    tokens = tmp_path / "tokens_inpaint"
    make_token_shards(TokenShardSettings(settings["input"], str(tokens), codec=str(token_root.parent / "codec.safetensors"),
                                         tasks=("inpaint", "se"), vocabulary=str(base_ckpt),
                                         shard_max_samples=4, workers=1, progress=False))  # fmt: skip
    args = [*lm_recipe_args("finetune_new_task.yaml"), *data_args(tokens, '{"inpaint": 1.0, "se": 0.25}'),
            *small, *quiet, "--model.init_args.init_from", str(base_ckpt),
            "--trainer.default_root_dir", str(tmp_path / "ft")]  # fmt: skip
    cli = run_lightning([*args, "--trainer.max_steps", "2"], run=False)
    cli.datamodule.setup("fit")
    vocab = cli.datamodule.vocabulary
    vocab.check_extends(base_vocab)  # every old id where it was
    assert set(vocab.tasks) == set(base_vocab.tasks) | {"inpaint"} and vocab.size > base_vocab.size
    assert all(vocab.tasks[t] == i for t, i in base_vocab.tasks.items())
    model = cli.model
    model.use_vocabulary(vocab, "the data")
    grown = model.build_network().eval()
    base_net.eval()

    # before any step: an old-task sequence gets the base LM's logits over the old ids
    batch = next(b for b in cli.datamodule.eval_batches("valid") if "se" in b.tasks)
    se = [i for i, task in enumerate(batch.tasks) if task == "se"]
    with torch.no_grad():
        old, new = base_net(batch.ids[se]), grown(batch.ids[se])
    h0 = old.first.shape[-1]
    assert new.first.shape[-1] > h0  # head 0 grew by the new task token
    torch.testing.assert_close(new.first[..., :h0], old.first, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new.rest, old.rest, atol=1e-5, rtol=1e-5)

    # the fine-tune trains on the new task and saves the grown vocabulary
    main(["fit", *args, "--trainer.max_steps", "2"])
    tuned_net, tuned_vocab = load_network(tmp_path / "ft" / "checkpoints" / "last.ckpt")
    assert tuned_vocab.hash == vocab.hash and "inpaint" in tuned_vocab.tasks
    assert not torch.equal(
        tuned_net.embed.weight[: base_net.embed.num_embeddings], base_net.embed.weight
    )

    # shards of another vocabulary than the checkpoint's are refused, naming the fix
    with pytest.raises(ValueError, match="does not extend"):
        bad = tmp_path / "tokens_fresh"
        make_token_shards(TokenShardSettings(settings["input"], str(bad), codec=str(token_root.parent / "codec.safetensors"),
                                             tasks=("inpaint",), shard_max_samples=4, workers=1, progress=False))  # fmt: skip
        cli = run_lightning([*args[:-2], "--trainer.default_root_dir", str(tmp_path / "bad"),
                             *data_args(bad, '{"inpaint": 1.0}'), "--trainer.max_steps", "1"], run=False)  # fmt: skip
        cli.datamodule.setup("fit")
        cli.model.use_vocabulary(cli.datamodule.vocabulary, "the data")
        cli.model.build_network()


@pytest.mark.slow
def test_the_debug_recipe_fits_through_the_cli(token_root, tmp_path):
    from lit_codec.cli import main

    main(["fit", *lm_recipe_args("se/debug.yaml"), *data_args(token_root), "--trainer.max_steps", "3",
          "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
          "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "3",
          "--trainer.num_sanity_val_steps", "0", "--model.init_args.scheduler.init_args.total_steps", "3",
          *_checkpoint_every(3)])  # fmt: skip
    last = tmp_path / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)
    assert saved["lit_codec"]["vocab_hash"] == shard_hash(token_root)
    assert saved["global_step"] == 3


# --------------------------------------------------------------------------- DDP and FSDP
def _fit_subprocess(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "-m", "lit_codec.cli", "fit", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=400)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    return proc


@pytest.mark.distributed
@pytest.mark.slow
def test_the_fsdp_delta_trains_an_lm_on_two_ranks_and_resumes(token_root, tmp_path):
    def args(steps):
        return [*lm_recipe_args("se/debug.yaml", "fsdp.yaml"), *data_args(token_root), "--trainer.devices", "2",
                "--trainer.max_steps", str(steps), "--trainer.default_root_dir", str(tmp_path),
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false",
                "--trainer.val_check_interval", "2", "--trainer.num_sanity_val_steps", "0",
                "--model.init_args.scheduler.init_args.total_steps", "6", *_checkpoint_every(2)]  # fmt: skip

    proc = _fit_subprocess(args(4), tmp_path)
    assert "returned a view tensor" not in proc.stderr  # FSDP2 gets owned logits
    last = tmp_path / "checkpoints" / "last.ckpt"
    assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2  # sharded, one file per rank
    meta = torch.load(last / "meta.pt", weights_only=True)
    assert meta["lit_codec"]["vocab_hash"] == shard_hash(token_root) and meta["global_step"] == 4
    assert meta["lit_codec"]["network"]["class_path"] == "lit_codec.nn.multiscale_lm.MultiScaleLM"
    _fit_subprocess([*args(6), "--ckpt_path", "last"], tmp_path)
    meta = torch.load(last / "meta.pt", weights_only=True)
    assert meta["global_step"] == 6 and meta["lit_codec"]["batches_seen"] == 6


@pytest.mark.distributed
@pytest.mark.slow
def test_ddp_gives_the_loss_of_one_process_with_the_global_batch(tmp_path):
    """2 ranks x 2 sequences vs 1 rank x 4 (sequences of unequal lengths, so the ranks hold
    unequal token counts): the same losses and weights after 3 SGD steps."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), "WANDB_MODE": "disabled"}
    for devices in (1, 2):
        proc = subprocess.run([sys.executable, __file__, str(tmp_path / f"run{devices}.pt"), str(devices)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-4000:]
    one, two = (torch.load(tmp_path / f"run{d}.pt", weights_only=True) for d in (1, 2))
    assert len(one["losses"]) == 3
    np.testing.assert_allclose(two["losses"], one["losses"], rtol=1e-5)
    assert one["losses"][2] < one["losses"][0]
    for key, value in one["state"].items():
        torch.testing.assert_close(two["state"][key], value, atol=1e-5, rtol=1e-5, msg=key)


def _ddp_worker(out: str, devices: int) -> None:
    vocab, templates = tiny_vocabulary()
    steps = [
        sequences(vocab, templates, ["se", "tts", "tts", "se"], seed=s, frames=(3, 9, 5, 7))
        for s in range(3)
    ]

    class Halves(L.LightningDataModule):
        def __init__(self):
            super().__init__()
            self.vocabulary = vocab

        def train_dataloader(self):
            world, rank = self.trainer.world_size, self.trainer.global_rank
            per = 4 // world
            return DataLoader([collate(vocab, seqs[rank * per : (rank + 1) * per]) for seqs in steps],
                              batch_size=None)  # fmt: skip

    losses = Losses()
    model = CodecLM(tiny_network(vocab), lambda p: torch.optim.SGD(p, lr=0.5), vocabulary=vocab,
                    condition_dropout=0.0)  # fmt: skip
    run = L.Trainer(max_steps=3, accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                    logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                    use_distributed_sampler=False, num_sanity_val_steps=0, limit_val_batches=0,
                    callbacks=[losses])  # fmt: skip
    run.fit(model, datamodule=Halves())
    if run.global_rank == 0:
        state = {k: v.detach().clone() for k, v in model.network.state_dict().items()}
        torch.save({"losses": losses.values, "state": state}, out)


if __name__ == "__main__":
    torch.set_num_threads(1)
    _ddp_worker(sys.argv[1], int(sys.argv[2]))
