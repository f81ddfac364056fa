"""Training step: one full GAN step of the 24 kHz recipe against EnCodec's generator-only step.

Ours: one ``CodecGAN.training_step`` of ``recipes/codec/soundstream_24khz_6kbps.yaml``, built
as ``lit-codec fit`` builds it and run by its Lightning trainer, with the discriminator active
from the first step (``--model.init_args.discriminator_start_step 0``) and the quantizer's
warm-up off (``--model.init_args.quantizer.init_args.warmup_steps 0``): generator forward
(encoder, residual VQ with EMA updates and quantizer dropout, decoder), discriminator step
(both discriminators on real and detached fake audio, backward, clipping, Adam), generator
step (multi-scale mel loss, adversarial and feature-matching losses through both
discriminators, commitment loss, backward, clipping, Adam), logging. The time of a step is
measured by a callback from ``on_train_batch_start`` to ``on_train_batch_end`` (data loading
excluded).

Peer: the generator-only training step of EnCodec's published 24 kHz model
(``encodec.EncodecModel.encodec_model_24khz(pretrained=False)``, 14.9 M parameters with its
LSTMs): encoder, its residual VQ in training mode at 6 kbps (EMA updates, commitment
penalty), decoder, ``15 * mel + L1`` (the same :class:`lit_codec.nn.MultiScaleMelLoss` ours
uses), backward, Adam. No discriminator: it is the cheaper half of a GAN step.

Both get the same batches of real audio (4 x 1 s at 24 kHz, random crops of the shipped
samples resampled with soxr, or of ``--input DIR``). The EnCodec step runs inside the same
training loop, between two of our steps (alternating rounds), after two warm-up steps each;
each figure is the median over the rounds, on one thread.

Goal (issue 3): our full step <= 1.5 x EnCodec's generator-only step. The script prints
``ratio = 1.5 * t_encodec / t_ours``: > 1 means the goal is met.

Run: ``OMP_NUM_THREADS=1 python bench/train_step.py [--rounds 5] [--input DIR]``. Any other
argument is passed to the recipe as a command-line override, e.g.
``--model.init_args.generator.init_args.channels_dec 32`` (used to size the recipe).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import _common  # noqa: F401  (one thread, before torch)
import torch
from _common import build_recipe, crops, load_corpus, millions, one_thread, print_ratio
from _encodec_stub import import_encodec

RECIPE = "recipes/codec/soundstream_24khz_6kbps.yaml"
SAMPLE_RATE = 24_000


class EncodecStep:
    """One generator-only training step of EnCodec's 24 kHz model at 6 kbps."""

    def __init__(self, mel_loss: torch.nn.Module) -> None:
        model = import_encodec().EncodecModel.encodec_model_24khz(pretrained=False)
        model.set_target_bandwidth(6.0)
        self.model = model.train()
        self.mel_loss = mel_loss
        self.optimizer = torch.optim.Adam(model.parameters(), lr=3e-4, betas=(0.5, 0.9))

    def __call__(self, wav: torch.Tensor) -> None:
        model = self.model
        latent = model.encoder(wav)  # (B, 128, frames)
        q = model.quantizer(latent, model.frame_rate, model.bandwidth)
        audio = model.decoder(q.quantized)[..., : wav.shape[-1]]  # (B, 1, T)
        loss = (
            15.0 * self.mel_loss(audio, wav) + torch.nn.functional.l1_loss(audio, wav) + q.penalty
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()


def make_timer(peer: EncodecStep, batches: list[torch.Tensor], warmup: int):
    """A Lightning callback timing our steps and running the peer's step between them."""
    import lightning as L

    class Interleave(L.Callback):
        def __init__(self) -> None:
            self.ours: list[float] = []
            self.peer: list[float] = []
            self._start = 0.0

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            self._start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            elapsed = time.perf_counter() - self._start
            start = time.perf_counter()
            peer(batches[batch_idx % len(batches)])
            peer_elapsed = time.perf_counter() - start
            if batch_idx >= warmup:
                self.ours.append(elapsed)
                self.peer.append(peer_elapsed)

    return Interleave()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed steps of each side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each side first")
    parser.add_argument("--batch", type=int, default=4, help="clips per batch")
    parser.add_argument("--seconds", type=float, default=1.0, help="length of each clip")
    parser.add_argument("--input", default=None, help="audio folder (default: data_prep/samples)")
    args, overrides = parser.parse_known_args()
    one_thread()
    torch.manual_seed(0)

    clips = load_corpus(args.input, SAMPLE_RATE, max_seconds=120)
    steps = args.warmup + args.rounds
    length = int(args.seconds * SAMPLE_RATE)
    batches = [crops(clips, args.batch, length, seed=i) for i in range(steps)]

    with tempfile.TemporaryDirectory() as tmp:
        cli = build_recipe(
            RECIPE,
            "--model.init_args.discriminator_start_step", "0",
            "--model.init_args.quantizer.init_args.warmup_steps", "0",
            "--trainer.accelerator", "cpu",
            "--trainer.devices", "1",
            "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false",
            "--trainer.enable_model_summary", "false",
            "--trainer.num_sanity_val_steps", "0",
            "--trainer.limit_val_batches", "0",
            "--trainer.default_root_dir", tmp,
            # trainer.max_steps counts the optimizer steps of both networks
            "--trainer.max_steps", str(2 * steps),
            *overrides,
            root=tmp,
        )  # fmt: skip
        model = cli.model
        peer = EncodecStep(model.mel_loss)
        print(model.describe())
        gen = model.generator
        print(
            f"lit-codec: generator {millions(gen):.2f} M (C_enc {gen.encoder.conv_in.out_channels}, "
            f"C_dec {gen.decoder.conv_out.in_channels}), discriminators {millions(model.discriminator):.2f} M"
        )
        print(f"EnCodec 24 kHz: {millions(peer.model):.2f} M (generator only, no discriminator)")
        timer = make_timer(peer, batches, args.warmup)
        cli.trainer.callbacks.append(timer)
        loader = torch.utils.data.DataLoader(batches, batch_size=None)
        cli.trainer.fit(model, train_dataloaders=loader)
        if len(timer.ours) < args.rounds:
            raise SystemExit(f"only {len(timer.ours)} timed steps ran, expected {args.rounds}")

    t_ours = statistics.median(timer.ours)
    t_peer = statistics.median(timer.peer)
    shape = f"batch {args.batch} x {args.seconds:g} s at 24 kHz"
    print(f"{shape}, 1 thread, median of {args.rounds} alternating steps")
    print(f"lit-codec full GAN step (D + G):        {t_ours:7.3f} s")
    print(f"EnCodec generator-only step:            {t_peer:7.3f} s")
    print(f"ours / EnCodec: {t_ours / t_peer:.2f} (goal: <= 1.5)")
    print(
        "ratio = 1.5 * t_encodec / t_ours (> 1: the goal 'full step <= 1.5 x EnCodec's G step' is met)"
    )
    print_ratio(1.5 * t_peer / t_ours)


if __name__ == "__main__":
    main()
