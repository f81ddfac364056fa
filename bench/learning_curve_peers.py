"""The peers of ``bench/learning_curve.py``: EnCodec and descript-audio-codec, trained here.

Each peer is its authors' own network code (``pip install --no-deps encodec==0.1.1``;
``pip install --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2`` and the
pure-Python packages audiotools imports, see ``make bench``) configured for 16 kHz speech at
50 frames/s with 12 codebooks of 1024 codes (6 kbps; 3 kbps = the first 6), trained in a
plain PyTorch loop with the losses, weights and optimizers its paper or training config
gives. A peer has ``train_step(audio (B, 1, T)) -> logged scalars`` and
``reconstruct(audio (1, 1, T), n_q) -> (1, 1, T)``; :func:`train_peer` runs the steps against
the wall-clock budgets and saves a checkpoint at each.

**EnCodec** (Défossez et al. 2022): ``encodec.modules.SEANetEncoder``/``SEANetDecoder`` and
``encodec.quantization.ResidualVectorQuantizer`` with the settings of
``EncodecModel.encodec_model_24khz`` (32 filters, ratios (8, 5, 4, 2), dimension 128, two LSTM
layers, causal, weight norm; k-means-initialised EMA codebooks, dead codes replaced) at
16 kHz, wrapped in ``encodec.EncodecModel`` with target bandwidths 1.5 / 3 / 6 kbps, one
drawn per batch (the paper trains every bandwidth this way). Losses as in the paper
(section 3.4): L1 on the waveform (0.1), multi-scale mel reconstruction (1: 64-band mel
spectrograms of normalised STFTs with windows 2^5..2^11 and hop window/4, L1 on magnitudes
plus MSE on log magnitudes as audiocraft computes it, averaged over scales), hinge
adversarial loss (3) and relative feature matching (3) against the package's own MS-STFT
discriminator (``encodec.msstftd``, 32 filters, the paper's five windows 2048..128), the
commitment loss (1) outside the balancer, Adam 3e-4 (0.5, 0.9) for both networks, the
discriminator updated with probability 2/3 (the paper's 24 kHz setting). The pip package
has no gradient balancer and no training loop: the balancer is lit-codec's
:class:`lit_codec.nn.LossBalancer` (audiocraft's ``Balancer``, total norm 1, EMA 0.999, per
batch item). torchaudio has no build for this torch, so its one use here,
``torchaudio.transforms.Spectrogram`` in the discriminator, is a stand-in computing the same
normalised complex STFT with ``torch.stft``.

**descript-audio-codec** (Kumar et al. 2023): ``dac.model.DAC`` and
``dac.model.Discriminator`` with the package's ``conf/final/16khz.yml`` (encoder 64,
rates (2, 4, 5, 8), decoder 1536, 12 codebooks of 1024 codes of dimension 8, quantizer
dropout 0.5; MPD periods 2..11 and MRD at 2048/1024/512 with five bands), its losses
``dac.nn.loss.MelSpectrogramLoss`` (seven scales, log only) and ``GANLoss``, the weights of
its config (mel 15, adversarial 1, feature 2, codebook 1, commitment 0.25), AdamW 1e-4
(0.8, 0.99) with ExponentialLR 0.999996 for both networks, gradients clipped at 1000 (G) and
10 (D), one D step then one G step per batch as in its ``scripts/train.py``. Differences:
the 1.0.0 wheel's decoder drops ``stride % 2`` samples per odd-stride upsampling (8 at
16 kHz), which breaks its own losses; its transposed convolutions get
``output_padding = stride % 2``, as other ports of the model do (Hugging Face
transformers' ``DacDecoderBlock``).
audiotools is imported with stand-ins for torchaudio (never called on this path) and for
``librosa.filters.mel``, which the mel loss uses for its filterbank: it returns
:func:`lit_codec.nn.spectral.mel_filterbank`, a re-implementation of librosa's Slaney
filters. One training step on 4 x 1 s peaks at 7.4 GB of memory (measured on CPU), so a
batch of 16 x 1 s would not fit in 24 GB: a batch runs in micro-batches of ``micro_batch``
clips with accumulated gradients, first the generator without gradients and the
discriminator's step, then the generator again with the same random draws and its step.
The losses are the same as in one pass over the batch (checked with quantizer dropout off);
quantizer dropout takes half of each micro-batch instead of half of the batch; the cost is
one more forward of the generator. No loudness normalisation or phase shift of the input
(its data transforms): every system gets the same crops.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import random
import sys
import types
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.nn.balancer import LossBalancer
from lit_codec.nn.spectral import MelSpectrogram, mel_filterbank

__all__ = ["DACPeer", "EnCodecPeer", "PEERS", "PeerUnavailable", "build_peer", "train_peer"]

SAMPLE_RATE = 16_000
FRAME_RATE = 50  # frames/s: hop 320
N_Q = 12
CODEBOOK_SIZE = 1024

INSTALL = {
    "encodec": "pip install --no-deps encodec==0.1.1",
    "dac": "pip install --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2 "
    "argbind==0.3.9 ffmpy==1.0.0 flatten-dict==0.5.0 importlib-resources==7.1.0 julius==0.2.8 "
    "markdown-it-py==4.3.0 mdurl==0.1.2 randomname==0.2.1 rich==15.0.0 (or `make bench`)",
}


class PeerUnavailable(RuntimeError):
    """A peer's package is missing or cannot be imported here; the message says why."""


# --------------------------------------------------------------------------- stand-ins
class _Spectrogram(nn.Module):
    """``torchaudio.transforms.Spectrogram`` for what EnCodec's MS-STFT-D asks of it:
    the complex STFT (``power=None``), divided by the window's L2 norm when ``normalized``."""

    def __init__(self, n_fft: int, hop_length: int, win_length: int, window_fn=torch.hann_window,
                 normalized: bool = False, center: bool = True, pad_mode: str | None = "reflect",
                 power: float | None = 2.0):  # fmt: skip
        super().__init__()
        if power is not None:
            raise NotImplementedError("this stand-in only computes complex spectrograms")
        self.n_fft, self.hop_length, self.win_length = n_fft, hop_length, win_length
        self.normalized, self.center, self.pad_mode = normalized, center, pad_mode or "reflect"
        self.register_buffer("window", window_fn(win_length), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """``x (..., T)`` -> complex ``(..., n_fft // 2 + 1, frames)``."""
        spec = torch.stft(x.reshape(-1, x.shape[-1]), self.n_fft, self.hop_length, self.win_length,
                          self.window, center=self.center, pad_mode=self.pad_mode,
                          return_complex=True)  # (N, F, frames)  # fmt: skip
        if self.normalized:
            spec = spec / self.window.pow(2).sum().sqrt()
        return spec.reshape(*x.shape[:-1], *spec.shape[-2:])  # (..., F, frames)


def _librosa_mel(sr: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax=None, **kw):
    if kw.get("htk") or kw.get("norm", "slaney") != "slaney":
        raise NotImplementedError("the librosa stand-in computes Slaney filters only")
    return mel_filterbank(sr, n_fft, n_mels, fmin, fmax).numpy()  # (n_mels, n_fft // 2 + 1)


class _StandIn(types.ModuleType):
    """A missing package: the attributes set on it work, any other one raises."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(
            f"{self.__name__}.{name} was used, but {self.__name__} is a stand-in here "
            "(bench/learning_curve_peers.py): only the parts it defines may be called"
        )


def _install_stand_ins() -> list[str]:
    """Put stand-ins for torchaudio and librosa in ``sys.modules`` where they are missing."""
    installed = []
    if "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is None:
        torchaudio = _StandIn("torchaudio")
        transforms = types.ModuleType("torchaudio.transforms")
        transforms.Spectrogram = _Spectrogram
        torchaudio.transforms = transforms
        sys.modules["torchaudio"] = torchaudio
        sys.modules["torchaudio.transforms"] = transforms
        installed.append("torchaudio")
    if "librosa" not in sys.modules and importlib.util.find_spec("librosa") is None:
        librosa = _StandIn("librosa")
        filters = types.ModuleType("librosa.filters")
        filters.mel = _librosa_mel
        librosa.filters = filters
        sys.modules["librosa"] = librosa
        sys.modules["librosa.filters"] = filters
        installed.append("librosa")
    return installed


def import_peer(name: str) -> types.ModuleType:
    """The peer's package (``encodec`` or ``dac``), or :class:`PeerUnavailable` saying why."""
    import warnings

    _install_stand_ins()
    warnings.filterwarnings("ignore", message=r".*weight_norm.*deprecated.*")
    warnings.filterwarnings("ignore", message="stft_data changed shape")  # audiotools, harmless
    try:
        return importlib.import_module(name)
    except Exception as e:  # ImportError, or a dependency failing at import time
        raise PeerUnavailable(
            f"`import {name}` failed ({type(e).__name__}: {e}); install it with: {INSTALL[name]}"
        ) from e


# --------------------------------------------------------------------------- EnCodec
class EnCodecMelLoss(nn.Module):
    """EnCodec's frequency-domain reconstruction loss: 64-band mel spectrograms of normalised
    STFTs at windows ``2**i`` (hop ``2**i / 4``), L1 on magnitudes + ``alpha`` x MSE on log10
    magnitudes, averaged over the scales."""

    def __init__(self, sample_rate: int, exponents: Sequence[int] = range(5, 12), n_mels: int = 64,
                 alpha: float = 1.0, floor: float = 1e-5):  # fmt: skip
        super().__init__()
        self.alpha, self.floor = alpha, floor
        self.mels = nn.ModuleList(
            MelSpectrogram(
                sample_rate,
                n_fft=2**i,
                hop_length=2**i // 4,
                n_mels=n_mels,
                center=False,
                norm=None,
                mel_scale="htk",
            )  # fmt: skip
            for i in exponents
        )

    def _mel(self, mel: MelSpectrogram, x: Tensor) -> Tensor:
        pad = (mel.n_fft - mel.hop_length) // 2
        x = F.pad(x, (pad, pad), mode="reflect")  # (B, 1, T + 2 pad)
        return mel(x) / mel.window.pow(2).sum().sqrt()  # (B, n_mels, frames), normalised STFT

    def forward(self, y_hat: Tensor, y: Tensor) -> Tensor:
        loss = y_hat.new_zeros(())
        for mel in self.mels:
            m_hat = self._mel(mel, y_hat)
            with torch.no_grad():
                m = self._mel(mel, y)
            log_hat = m_hat.clamp_min(self.floor).log10()
            log_ref = m.clamp_min(self.floor).log10()
            loss = loss + F.l1_loss(m_hat, m) + self.alpha * F.mse_loss(log_hat, log_ref)
        return loss / len(self.mels)


class EnCodecPeer:
    """EnCodec's SEANet + RVQ at 16 kHz, its MS-STFT discriminator and its paper's losses."""

    name = "encodec"
    weights = {"rec/l1": 0.1, "rec/msspec": 1.0, "adv/gen": 3.0, "adv/feat": 3.0}
    commitment_weight = 1.0
    discriminator_probability = 2 / 3

    def __init__(self, train: bool = True, seed: int = 0, device: str = "cpu", **_):
        encodec = import_peer("encodec")
        from encodec.modules import SEANetDecoder, SEANetEncoder
        from encodec.msstftd import MultiScaleSTFTDiscriminator
        from encodec.quantization import ResidualVectorQuantizer

        encoder = SEANetEncoder(channels=1, norm="weight_norm", causal=True)  # 24 kHz settings
        decoder = SEANetDecoder(channels=1, norm="weight_norm", causal=True)
        assert math.prod(encoder.ratios) == SAMPLE_RATE // FRAME_RATE
        quantizer = ResidualVectorQuantizer(
            dimension=encoder.dimension, n_q=N_Q, bins=CODEBOOK_SIZE
        )
        self.model = encodec.EncodecModel(encoder, decoder, quantizer, [1.5, 3.0, 6.0], SAMPLE_RATE,
                                          channels=1, normalize=False, name="encodec-16khz")  # fmt: skip
        self.model.to(device)
        self.device = device
        if not train:
            return
        windows = [2048, 1024, 512, 256, 128]
        self.discriminator = MultiScaleSTFTDiscriminator(
            filters=32, n_ffts=windows, hop_lengths=[w // 4 for w in windows], win_lengths=windows
        ).to(device)
        self.mel_loss = EnCodecMelLoss(SAMPLE_RATE).to(device)
        self.balancer = LossBalancer(self.weights, total_norm=1.0, ema_decay=0.999).to(device)
        self.opt_g = torch.optim.Adam(self.model.parameters(), lr=3e-4, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=3e-4, betas=(0.5, 0.9))
        self.rng = random.Random(seed)

    def describe(self) -> str:
        g = sum(p.numel() for p in self.model.parameters()) / 1e6
        d = sum(p.numel() for p in self.discriminator.parameters()) / 1e6
        return f"EnCodec SEANet + RVQ 16 kHz: generator {g:.2f} M, MS-STFT-D {d:.2f} M parameters"

    def train_step(self, x: Tensor) -> dict[str, float]:
        """One batch ``x (B, 1, T)``: maybe a discriminator step, then a generator step."""
        model, disc = self.model, self.discriminator
        model.train()
        bandwidth = self.rng.choice(model.target_bandwidths)
        emb = model.encoder(x)  # (B, 128, F)
        q = model.quantizer(emb, model.frame_rate, bandwidth)
        y = model.decoder(q.quantized)[..., : x.shape[-1]]  # (B, 1, T)
        logs = {"kbps": float(bandwidth)}
        if self.rng.random() < self.discriminator_probability:
            real, _ = disc(x)
            fake, _ = disc(y.detach())
            loss_d = sum(F.relu(1 - r).mean() + F.relu(1 + f).mean() for r, f in zip(real, fake))
            loss_d = loss_d / len(real)
            self.opt_d.zero_grad(set_to_none=True)
            loss_d.backward()
            self.opt_d.step()
            logs["adv/disc"] = loss_d.item()
        disc.requires_grad_(False)  # the generator's losses need no discriminator gradients
        fake, fmap_fake = disc(y)
        with torch.no_grad():
            _, fmap_real = disc(x)
        disc.requires_grad_(True)
        feats = [F.l1_loss(f, r) / r.abs().mean().clamp_min(1e-8)
                 for ff, fr in zip(fmap_fake, fmap_real) for f, r in zip(ff, fr)]  # fmt: skip
        losses = {
            "rec/l1": F.l1_loss(y, x),
            "rec/msspec": self.mel_loss(y, x),
            "adv/gen": sum(F.relu(1 - f).mean() for f in fake) / len(fake),
            "adv/feat": sum(feats) / len(feats),
        }
        out = self.balancer(losses, y)
        self.opt_g.zero_grad(set_to_none=True)
        (out.surrogate + self.commitment_weight * q.penalty).backward()
        self.opt_g.step()
        logs.update({k: v.item() for k, v in losses.items()}, **{"vq/commit": q.penalty.item()})
        return logs

    @torch.inference_mode()
    def reconstruct(self, x: Tensor, n_q: int) -> Tensor:
        """Encode and decode ``x (1, 1, T)`` with ``n_q`` codebooks through EnCodec's API."""
        self.model.eval()
        self.model.set_target_bandwidth(n_q * math.log2(CODEBOOK_SIZE) * FRAME_RATE / 1000)
        return self.model.decode(self.model.encode(x))[..., : x.shape[-1]]  # (1, 1, T)


# --------------------------------------------------------------------------- DAC
class DACPeer:
    """descript-audio-codec's model, discriminator, losses and loop at its 16 kHz config."""

    name = "dac"
    lambdas = {"mel/loss": 15.0, "adv/feat_loss": 2.0, "adv/gen_loss": 1.0,
               "vq/commitment_loss": 0.25, "vq/codebook_loss": 1.0}  # fmt: skip

    def __init__(
        self, train: bool = True, seed: int = 0, device: str = "cpu", micro_batch: int = 4
    ):
        dac = import_peer("dac")
        from audiotools import AudioSignal
        from dac.nn.loss import GANLoss, MelSpectrogramLoss

        self.AudioSignal = AudioSignal
        self.model = dac.model.DAC(encoder_dim=64, encoder_rates=[2, 4, 5, 8], decoder_dim=1536,
                                   decoder_rates=[8, 5, 4, 2], n_codebooks=N_Q,
                                   codebook_size=CODEBOOK_SIZE, codebook_dim=8,
                                   quantizer_dropout=0.5, sample_rate=SAMPLE_RATE)  # fmt: skip
        for module in self.model.decoder.modules():  # see the module docstring
            if isinstance(module, nn.ConvTranspose1d) and module.stride[0] % 2:
                module.output_padding = (module.stride[0] % 2,)
        self.model.to(device)
        self.device = device
        self.micro_batch = max(1, int(micro_batch))
        if not train:
            return
        self.discriminator = dac.model.Discriminator(
            rates=[], periods=[2, 3, 5, 7, 11], fft_sizes=[2048, 1024, 512], sample_rate=SAMPLE_RATE,
            bands=[[0.0, 0.1], [0.1, 0.25], [0.25, 0.5], [0.5, 0.75], [0.75, 1.0]],
        ).to(device)  # fmt: skip
        self.mel_loss = MelSpectrogramLoss(
            n_mels=[5, 10, 20, 40, 80, 160, 320], window_lengths=[32, 64, 128, 256, 512, 1024, 2048],
            mel_fmin=[0.0] * 7, mel_fmax=[None] * 7, pow=1.0, clamp_eps=1e-5, mag_weight=0.0,
        )  # fmt: skip
        self.gan_loss = GANLoss(self.discriminator)
        self.opt_g = torch.optim.AdamW(self.model.parameters(), lr=1e-4, betas=(0.8, 0.99))
        self.opt_d = torch.optim.AdamW(self.discriminator.parameters(), lr=1e-4, betas=(0.8, 0.99))
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.opt_g, 0.999996)
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.opt_d, 0.999996)

    def describe(self) -> str:
        g = sum(p.numel() for p in self.model.parameters()) / 1e6
        d = sum(p.numel() for p in self.discriminator.parameters()) / 1e6
        return (f"descript-audio-codec 16 kHz: generator {g:.2f} M, discriminator {d:.2f} M "
                f"parameters; micro-batches of {self.micro_batch}")  # fmt: skip

    def _signals(self, recons: Tensor, x: Tensor):
        return self.AudioSignal(recons, SAMPLE_RATE), self.AudioSignal(x, SAMPLE_RATE)

    def _generator_loss(self, out: dict, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        recons, signal = self._signals(out["audio"], x)
        terms = {"mel/loss": self.mel_loss(recons, signal)}
        terms["adv/gen_loss"], terms["adv/feat_loss"] = self.gan_loss.generator_loss(recons, signal)
        terms["vq/commitment_loss"] = out["vq/commitment_loss"]
        terms["vq/codebook_loss"] = out["vq/codebook_loss"]
        return sum(w * terms[k] for k, w in self.lambdas.items()), terms

    def train_step(self, x: Tensor) -> dict[str, float]:
        """One batch ``x (B, 1, T)``: a discriminator step, then a generator step."""
        model = self.model
        model.train()
        self.discriminator.train()
        chunks = x.split(self.micro_batch)  # (b, 1, T) each
        terms: dict[str, float] = {}
        self.opt_d.zero_grad()
        if len(chunks) == 1:  # scripts/train.py exactly
            out = model(x, SAMPLE_RATE)
            recons, signal = self._signals(out["audio"], x)
            loss_d = self.gan_loss.discriminator_loss(recons, signal)
            loss_d.backward()
            self._step(self.discriminator, self.opt_d, self.sched_d, 10.0)
            self.opt_g.zero_grad()
            loss, parts = self._generator_loss(out, x)
            loss.backward()
            self._step(model, self.opt_g, self.sched_g, 1e3)
            return {"adv/disc_loss": loss_d.item(), **{k: v.item() for k, v in parts.items()}}
        rng_states, loss_d_total = [], 0.0
        for chunk in chunks:  # pass 1: recons without gradients, the discriminator's step
            rng_states.append(torch.get_rng_state())
            with torch.no_grad():
                audio = model(chunk, SAMPLE_RATE)["audio"]
            loss_d = self.gan_loss.discriminator_loss(*self._signals(audio, chunk))
            (loss_d * len(chunk) / len(x)).backward()
            loss_d_total += loss_d.item() * len(chunk) / len(x)
        self._step(self.discriminator, self.opt_d, self.sched_d, 10.0)
        self.opt_g.zero_grad()
        for chunk, state in zip(chunks, rng_states):  # pass 2: the same draws, with gradients
            torch.set_rng_state(state)
            loss, parts = self._generator_loss(model(chunk, SAMPLE_RATE), chunk)
            (loss * len(chunk) / len(x)).backward()
            for k, v in parts.items():
                terms[k] = terms.get(k, 0.0) + v.item() * len(chunk) / len(x)
        self._step(model, self.opt_g, self.sched_g, 1e3)
        return {"adv/disc_loss": loss_d_total, **terms}

    @staticmethod
    def _step(module: nn.Module, optimizer, scheduler, max_norm: float) -> None:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
        optimizer.step()
        scheduler.step()

    @torch.inference_mode()
    def reconstruct(self, x: Tensor, n_q: int) -> Tensor:
        """Encode and decode ``x (1, 1, T)`` with the first ``n_q`` codebooks (DAC's forward)."""
        self.model.eval()
        return self.model(x, SAMPLE_RATE, n_quantizers=n_q)["audio"]  # (1, 1, T)


PEERS = {"encodec": EnCodecPeer, "dac": DACPeer}


def build_peer(name: str, train: bool = True, **kwargs):
    """A peer by name (``encodec``, ``dac``); :class:`PeerUnavailable` if it cannot be imported."""
    return PEERS[name](train=train, **kwargs)


def load_peer(name: str, checkpoint: Path, device: str = "cpu"):
    """A peer for inference with the weights of a checkpoint written by :func:`train_peer`."""
    peer = build_peer(name, train=False, device=device)
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    peer.model.load_state_dict(state["model"])
    return peer


# --------------------------------------------------------------------------- training
def train_peer(peer, batches: Iterator[Tensor], budgets: Sequence[float], out_dir: Path,
               log_every: int = 25) -> None:  # fmt: skip
    """Train ``peer`` on ``batches`` until the last budget (minutes of training) is crossed,
    saving ``out_dir/budget_<M>min.pt`` and its ``.json`` record at each budget."""
    from learning_curve_support import BudgetClock, budget_tag, write_record

    out_dir.mkdir(parents=True, exist_ok=True)
    clock = BudgetClock(budgets)
    steps, audio_seconds = 0, 0.0
    with open(out_dir / "log.jsonl", "w", encoding="utf-8") as log:
        clock.start()
        while not clock.done:
            x = next(batches).to(peer.device)  # (B, 1, T); loading counts as training time
            logs = peer.train_step(x)
            steps += 1
            audio_seconds += x.shape[0] * x.shape[-1] / SAMPLE_RATE
            if steps % log_every == 0 or steps == 1:
                log.write(json.dumps({"step": steps, "seconds": clock.elapsed(), **logs}) + "\n")
                log.flush()
            for minutes in clock.crossed():
                seconds = clock.elapsed()
                with clock.paused():
                    tag = budget_tag(minutes)
                    tmp = out_dir / f"{tag}.pt.tmp"
                    torch.save({"model": peer.model.state_dict(), "steps": steps}, tmp)
                    tmp.replace(out_dir / f"{tag}.pt")
                    write_record(out_dir / f"{tag}.json", {"minutes": minutes, "steps": steps,
                                 "train_seconds": seconds, "audio_seconds": audio_seconds})  # fmt: skip
                print(f"[learning_curve] {peer.name} {tag}: {steps} generator steps", flush=True)
