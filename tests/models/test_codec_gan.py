import lightning as L
import pytest
import torch

from lit_codec.codec import Codec
from lit_codec.models import NonFiniteLossError

from .tiny import NoiseClips, loader, tiny_gan


def trainer(max_steps, **kw):
    kw.setdefault("enable_checkpointing", False)
    return L.Trainer(max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_model_summary=False, num_sanity_val_steps=0, **kw)  # fmt: skip


def _params(module):
    return {n: p.detach().clone() for n, p in module.named_parameters()}


def _changed(before, module):
    return {n for n, p in module.named_parameters() if not torch.equal(before[n], p.detach())}


class StepSpy(L.Callback):
    """Snapshots parameters around each optimizer step of the first batch."""

    def __init__(self):
        self.events = []

    def on_train_batch_start(self, trainer, m, batch, batch_idx):
        self.events.append(
            (
                "start",
                _params(m.generator),
                _params(m.discriminator),
                m.generator.encoder.layers[0].weight.requires_grad
                if hasattr(m.generator.encoder, "layers")
                else None,
            )
        )

    def on_before_optimizer_step(self, trainer, m, optimizer):
        which = (
            "d"
            if optimizer.param_groups[0]["params"][0] is next(m.discriminator.parameters())
            else "g"
        )
        frozen_other = all(
            not p.requires_grad
            for p in (m.generator if which == "d" else m.discriminator).parameters()
        )
        self.events.append((which, _params(m.generator), _params(m.discriminator), frozen_other))

    def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
        self.events.append(("end", _params(m.generator), _params(m.discriminator), None))


def test_one_training_step_steps_both_optimizers_each_on_its_own_network():
    model = tiny_gan()
    spy = StepSpy()
    t = trainer(1, callbacks=[spy])
    t.fit(model, loader())
    kinds = [e[0] for e in spy.events]
    assert kinds == ["start", "d", "g", "end"]
    (_, g0, d0, _), (_, g1, d1, d_frozen_g), (_, g2, d2, g_frozen_d), (_, g3, d3, _) = spy.events
    assert d_frozen_g and g_frozen_d  # each optimizer toggled: the other network frozen
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(g0, g1) and same(g0, g2)  # the D step leaves G unchanged
    assert not same(d0, d3)  # the D step changed D ...
    assert same(d2, d3)  # ... and the G step left D unchanged
    assert not same(g2, g3)  # the G step changed G
    assert model.generator_step == 1 and t.global_step == 2  # global_step counts both optimizers
    assert all(p.requires_grad for p in model.parameters())  # untoggled afterwards


def test_discriminator_waits_for_its_start_step():
    model = tiny_gan(discriminator_start_step=2)
    spy = StepSpy()
    t = trainer(4, callbacks=[spy])
    t.fit(model, loader())
    kinds = [e[0] for e in spy.events if e[0] in "dg"]
    assert kinds == ["g", "g", "d", "g"]
    assert model.generator_step == 3 and t.global_step == 4


def test_discriminator_can_update_every_k_generator_steps():
    model = tiny_gan(discriminator_every=2)
    spy = StepSpy()
    t = trainer(6, callbacks=[spy])  # 6 optimizer steps: G D G G D G
    t.fit(model, loader())
    assert [e[0] for e in spy.events if e[0] in "dg"] == ["d", "g", "g", "d", "g", "g"]
    assert model.generator_step == 4 and t.global_step == 6


def test_non_finite_step_is_skipped_and_counted():
    model = tiny_gan()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    t = trainer(-1, max_epochs=1)  # one batch
    t.fit(model, torch.utils.data.DataLoader(NoiseClips(4, nan_at=0), batch_size=4))
    assert model.nonfinite_steps == 1 and model.generator_step == 1
    assert t.global_step == 0  # no optimizer stepped
    assert all(torch.equal(before[n], p) for n, p in model.named_parameters())  # weights unchanged


def test_consecutive_non_finite_steps_stop_training():
    model = tiny_gan(max_nonfinite_steps=3)
    t = trainer(10)
    with pytest.raises(NonFiniteLossError, match="3 generator steps in a row"):
        t.fit(model, torch.utils.data.DataLoader(NoiseClips(16, nan_at=0), batch_size=1, shuffle=False,
                                                 sampler=[0] * 16))  # fmt: skip


def test_validation_logs_every_bitrate():
    model = tiny_gan(eval_kbps=(5.0, 10.0))  # 32 codes x 1000 frames/s: 5 kbps per codebook
    t = trainer(4, limit_val_batches=1, val_check_interval=2)
    t.fit(model, loader(), loader(4))
    labels = {f"{model.quantizer.kbps(n):g}kbps" for n in (1, 2, 3)}
    for label in labels:
        assert (
            f"val/mel@{label}" in t.callback_metrics and f"val/sisdr@{label}" in t.callback_metrics
        )
    assert "val/loss" in t.callback_metrics


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_gan()
    t = trainer(4)  # 2 generator steps (+ 2 discriminator steps)
    t.fit(model, loader())
    path = tmp_path / "m.ckpt"
    t.save_checkpoint(path)
    codec = Codec.from_checkpoint(path)
    x = NoiseClips(2, length=1600)[1][None]
    model.eval()
    with torch.no_grad():
        z = model.generator.encode(x)
        codes = model.quantizer.encode(z)
        audio = model.generator.decode(model.quantizer.decode(codes))
    assert torch.equal(codec.encode(x), codes)
    torch.testing.assert_close(codec.decode(codes), audio, atol=1e-5, rtol=1e-4)
    # resuming restores the step counters and the optimizers
    resumed = tiny_gan()
    t2 = trainer(8)
    t2.fit(resumed, loader(), ckpt_path=path)
    assert model.generator_step == 2 and resumed.generator_step == 4 and t2.global_step == 8


def test_denoising_film_conditions_on_the_flag():
    from lit_codec.nn import NoiseMixer

    model = tiny_gan(
        film="encoder", noise=NoiseMixer(noisy_probability=1.0, denoise_probability=0.5)
    )
    trainer(2).fit(model, loader())
    x = NoiseClips(1, length=800)[0][None]
    model.eval()
    with torch.no_grad():  # FiLM starts as the identity; training made the flag matter
        plain = model.generator.encode(x, condition=torch.zeros(1))
        denoise = model.generator.encode(x, condition=torch.ones(1))
    assert (plain - denoise).abs().max() > 1e-5


def test_bf16_mixed_keeps_quantization_in_float32():
    model = tiny_gan()
    seen = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, m, outputs, batch, batch_idx):
            seen.append(
                {
                    k: float(v)
                    for k, v in trainer.callback_metrics.items()
                    if k in ("rec/mel", "adv/disc", "vq/commit")
                }
            )

    t = trainer(6, precision="bf16-mixed", callbacks=[Spy()])
    t.fit(model, loader())
    assert len(seen) == 3 and all(len(s) == 3 for s in seen)
    assert all(torch.isfinite(torch.tensor(list(s.values()))).all() for s in seen)
    for layer in model.quantizer.layers:
        assert layer.codebook.embed.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        latent = model.generator.encode(NoiseClips(1)[0][None])
        out = model.quantizer(latent.to(torch.bfloat16), n_q=3)
    assert (
        latent.dtype == torch.bfloat16 and out.quantized.dtype == torch.bfloat16
    )  # computed in fp32 inside
    assert all(p.dtype == torch.float32 for p in model.parameters())  # mixed: weights stay fp32


def test_stoi_loss_enters_the_reconstruction_losses_only_when_weighted():
    from lit_codec.nn import STOILoss

    plain = tiny_gan()
    assert plain.stoi_loss is None
    clean = NoiseClips(n=2, length=4000)
    real = torch.stack([clean[i] for i in range(2)])  # (2, 1, 4000)
    fake = real + 0.1 * torch.randn_like(real)
    assert "rec/stoi" not in plain.reconstruction_losses(fake, real)
    weighted = tiny_gan(
        loss_weights={"rec/stoi": 5.0}, stoi_loss=STOILoss(8000, segment=8, bands=14)
    )
    losses = weighted.reconstruction_losses(fake, real)
    expected = STOILoss(8000, segment=8, bands=14)(fake, real)
    assert float(losses["rec/stoi"]) == pytest.approx(float(expected)) and float(expected) > 0.0
    with pytest.raises(ValueError, match="use at most 14 bands"):  # the default at 8 kHz
        tiny_gan(loss_weights={"rec/stoi": 1.0})
