"""Frame-rate codec speed: the ConvNeXt generator against Vocos's architecture and SEANet.

All on one thread, random weights, the same audio (the shipped samples at 16 kHz, cut to
``--seconds``, default 10 s, as one clip); every function gets a warm-up call, then the
sides are timed in alternating rounds and each figure is the median over the rounds.
"forward" runs under ``torch.inference_mode``; "forward + backward" also backpropagates an
L1 loss against the input to every parameter.

1. Against SEANet (``--sections seanet``): the generators of
   ``recipes/codec/speech_16khz_6kbps.yaml`` (SEANet, 16/24 channels, compress 2) and
   ``recipes/codec/speech_16khz_convnext.yaml`` (ours, 15.6 M parameters; its trunks in bf16,
   and again in float32), built as ``lit-codec fit`` builds them: forward + backward.
   ``ratio = t_SEANet / t_ours``.
2. Sample rate (``--sections rates``): ours at 16, 24 and 48 kHz with the hop scaled to keep
   50 frames/s (n_fft = 4 hops), against SEANet at 16 kHz (strides 2, 4, 5, 8) and 48 kHz
   (strides 4, 5, 6, 8; same widths): forward + backward of the same duration. Only our
   STFT, input embedding and head grow with the rate; every SEANet layer does.
3. Depthwise convolution (``--sections depthwise``, not run by default): the ways to run the
   blocks' depthwise convolution (384 channels, kernel 7) on time-major activations, forward
   and forward + backward, at the training shape (8 clips x 50 frames) and at 10 s
   (1 x 500): PyTorch's ``Conv1d`` on a contiguous ``(B, C, T)`` copy and on the
   channels-last view, ``conv2d`` on the channels-last ``(B, C, 1, T)`` view (what
   :class:`lit_codec.nn.convnext.DepthwiseConv1d` does), a sum of 7 shifted products, and
   ``unfold``. Depthwise convolution has slow CPU paths (pytorch/pytorch#13716).
4. Against Vocos (``--sections vocos``, printed last): our encoder + decoder at the default
   sizes (centred, float32) against the same network assembled from ``vocos``'s own modules
   (``pip install --no-deps vocos``): ``VocosBackbone`` (width 384, MLP 1152, 8 blocks) on
   the same STFT features + linear projection + non-affine LayerNorm as encoder,
   ``VocosBackbone`` + ``ISTFTHead(padding="same")`` as decoder. Vocos embeds its input
   with a kernel-7 convolution; with a 1x1 embedding the architecture is identical to ours,
   so the script copies our weights into it and checks both compute the same function
   before timing. Both variants are timed in float32, and the 1x1 one against ours again
   with both trunks under bf16 autocast (STFT, latent and head in float32, as our
   ``trunk_precision="bfloat16"``); ``ratio = t_Vocos(1x1) / t_ours`` for forward +
   backward in float32 (the last line), for forward on the line before.

Run: ``OMP_NUM_THREADS=1 python bench/frame_codec_speed.py [--seconds 10] [--rounds 3]
[--sections seanet,rates,vocos,depthwise]``. X > 1 in ``ratio: X``: ours is faster.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import types
from collections.abc import Callable

import _common  # noqa: F401  (one thread, before torch)
import numpy as np
import torch
import torch.nn.functional as F
from _common import build_recipe, compare, load_corpus, millions, one_thread, print_ratio
from torch import nn

from lit_codec.nn.convnext_codec import ConvNeXtGenerator
from lit_codec.nn.seanet import SEANetGenerator

RATE = 16_000
SEANET_RECIPE = "recipes/codec/speech_16khz_6kbps.yaml"
CONVNEXT_RECIPE = "recipes/codec/speech_16khz_convnext.yaml"


def forward_backward(model: nn.Module, wav: torch.Tensor) -> Callable[[], None]:
    """One training-like pass: encode, decode, L1 against the input, backward."""

    def run() -> None:
        model.zero_grad(set_to_none=True)
        out = model.decode(model.encode(wav))[..., : wav.shape[-1]]  # (B, 1, T)
        F.l1_loss(out, wav).backward()

    return run


def forward(model: nn.Module, wav: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        with torch.inference_mode():
            model.decode(model.encode(wav))

    return run


def report(times: dict[str, float], seconds: float) -> None:
    for name, t in times.items():
        print(f"  {name:34s} {t * 1e3:9.1f} ms  ({seconds / t:6.1f} x real time)")


# ---------------------------------------------------------------- (1) SEANet
def against_seanet(wav: torch.Tensor, seconds: float, rounds: int) -> None:
    seanet = build_recipe(SEANET_RECIPE, "--trainer.logger", "false").model.generator.train()
    ours = build_recipe(CONVNEXT_RECIPE, "--trainer.logger", "false").model.generator.train()
    ours32 = ConvNeXtGenerator(**{**ours.config()["init_args"], "trunk_precision": "float32"})
    print(f"== (1) generator forward + backward on {seconds:g} s, the speech recipes' sizes")
    print(f"  SEANet {millions(seanet):.2f} M parameters; ours {millions(ours):.2f} M")
    times = compare(
        {
            "SEANet (speech_16khz_6kbps)": forward_backward(seanet, wav),
            "ours, bf16 trunks (the recipe)": forward_backward(ours, wav),
            "ours, float32": forward_backward(ours32, wav),
        },
        rounds=rounds,
    )
    report(times, seconds)
    base = times["SEANet (speech_16khz_6kbps)"]
    print(f"  SEANet / ours: bf16 trunks {base / times['ours, bf16 trunks (the recipe)']:.2f}, "
          f"float32 {base / times['ours, float32']:.2f}")  # fmt: skip
    print_ratio(base / times["ours, bf16 trunks (the recipe)"])


# ---------------------------------------------------------------- (2) sample rates
def sample_rates(clip: np.ndarray, seconds: float, rounds: int) -> None:
    import soxr

    print(f"== (2) forward + backward of {seconds:g} s at several sample rates (50 frames/s)")
    fns, sizes = {}, {}
    for rate in (16_000, 24_000, 48_000):
        audio = soxr.resample(clip, RATE, rate).astype(np.float32) if rate != RATE else clip
        wav = torch.from_numpy(audio).view(1, 1, -1)  # (1, 1, T)
        hop = rate // 50
        ours = ConvNeXtGenerator(n_fft=4 * hop, hop_length=hop)
        fns[f"ours {rate // 1000} kHz (hop {hop})"] = forward_backward(ours, wav)
        sizes[f"ours {rate // 1000} kHz (hop {hop})"] = millions(ours)
        if rate != 24_000:
            strides = (2, 4, 5, 8) if rate == RATE else (4, 5, 6, 8)
            seanet = SEANetGenerator(
                channels_enc=16, channels_dec=24, strides=strides, residual_compress=2
            )
            fns[f"SEANet {rate // 1000} kHz {strides}"] = forward_backward(seanet, wav)
            sizes[f"SEANet {rate // 1000} kHz {strides}"] = millions(seanet)
    times = compare(fns, rounds=rounds)
    for name, t in times.items():
        print(f"  {name:34s} {t * 1e3:9.1f} ms  ({sizes[name]:.2f} M parameters)")
    ours_growth = times["ours 48 kHz (hop 960)"] / times["ours 16 kHz (hop 320)"]
    seanet_growth = times["SEANet 48 kHz (4, 5, 6, 8)"] / times["SEANet 16 kHz (2, 4, 5, 8)"]
    print(f"  48 kHz / 16 kHz time: ours {ours_growth:.2f}, SEANet {seanet_growth:.2f}")


# ---------------------------------------------------------------- (3) depthwise convolution
def depthwise(rounds: int) -> None:
    from lit_codec.nn.convnext import DepthwiseConv1d

    channels, k = 384, 7
    conv = DepthwiseConv1d(channels, k, causal=False)
    w, b = conv.weight, conv.bias

    def conv1d_copy(x):  # (B, T, C) -> contiguous (B, C, T) and back
        y = F.conv1d(x.transpose(1, 2).contiguous(), w, b, padding=3, groups=channels)
        return y.transpose(1, 2)  # (B, T, C)

    def conv1d_view(x):
        return F.conv1d(x.transpose(1, 2), w, b, padding=3, groups=channels).transpose(1, 2)

    def conv2d_autograd(x):  # what DepthwiseConv1d computes, with PyTorch's backward
        image = F.pad(x, (0, 0, 3, 3)).transpose(1, 2).unsqueeze(2)  # (B, C, 1, T + 6)
        return F.conv2d(image, w.unsqueeze(2), b, groups=channels).squeeze(2).transpose(1, 2)

    def shifted(x):
        xp = F.pad(x, (0, 0, 3, 3))  # (B, T + 6, C)
        taps = w[:, 0].t()  # (K, C)
        y = b + xp[:, : x.shape[1]] * taps[0]
        for i in range(1, k):
            y = torch.addcmul(y, xp[:, i : i + x.shape[1]], taps[i])
        return y

    def unfold(x):
        windows = F.pad(x, (0, 0, 3, 3)).unfold(1, k, 1)  # (B, T, C, K)
        return (windows * w[:, 0]).sum(-1) + b

    variants = {"Conv1d, contiguous copy": conv1d_copy, "Conv1d, channels-last view": conv1d_view,
                "conv2d channels-last": conv2d_autograd, "conv2d + own backward (ours)": conv,
                "7 shifted products": shifted, "unfold": unfold}  # fmt: skip
    in_bf16 = ("Conv1d, contiguous copy", "conv2d channels-last", "conv2d + own backward (ours)")
    print("== (3) depthwise convolution, 384 channels, kernel 7, time-major input")
    for batch, frames in ((8, 50), (1, 500)):
        x = torch.randn(batch, frames, channels, requires_grad=True)
        ref = conv1d_copy(x)
        grads = torch.autograd.grad(ref.sum(), (x, w, b))
        fns, errors = {}, {}
        for name, fn in variants.items():
            for precision in ("fp32", "bf16") if name in in_bf16 else ("fp32",):
                cast = torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16")

                def fwd(fn=fn, cast=cast, x=x):
                    with torch.no_grad(), cast:
                        fn(x)

                def fb(fn=fn, cast=cast, x=x):
                    with cast:
                        y = fn(x)
                    y.sum().backward()

                fns[f"{name} {precision} fwd"], fns[f"{name} {precision} fwd+bwd"] = fwd, fb
            out = fn(x)
            mine = torch.autograd.grad(out.sum(), (x, w, b))
            relative = [(m - r).abs().max() / r.abs().max() for m, r in zip(mine, grads)]
            errors[name] = max((out - ref).abs().max().item(), *(e.item() for e in relative))
        times = compare(fns, rounds=max(rounds, 7))
        print(f"  B={batch} T={frames}  (max |err|: output and relative gradients, float32)")
        for name in variants:
            for precision in ("fp32", "bf16") if name in in_bf16 else ("fp32",):
                key = f"{name} {precision}"
                fwd, both = times[f"{key} fwd"] * 1e6, times[f"{key} fwd+bwd"] * 1e6
                print(f"    {key:34s} fwd {fwd:7.0f} us   fwd+bwd {both:7.0f} us   "
                      f"max |err| {errors[name]:.1e}")  # fmt: skip


# ---------------------------------------------------------------- (4) Vocos
def import_vocos() -> tuple[type, type]:
    """``VocosBackbone`` and ``ISTFTHead`` of the installed ``vocos``, without its package
    ``__init__`` (which loads pretrained-model code needing torchaudio and encodec);
    ``vocos.heads`` imports two mel helpers of torchaudio that only its IMDCT heads use."""
    if "vocos" not in sys.modules:
        spec = importlib.util.find_spec("vocos")
        if spec is None:
            raise SystemExit("vocos is not installed: pip install --no-deps vocos")
        package = types.ModuleType("vocos")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["vocos"] = package
    if "torchaudio" not in sys.modules and importlib.util.find_spec("torchaudio") is None:

        def unavailable(*args, **kwargs):
            raise RuntimeError("torchaudio stand-in: the benchmark must not call it")

        for name in ("torchaudio", "torchaudio.functional", "torchaudio.functional.functional"):
            sys.modules.setdefault(name, types.ModuleType(name))
        sys.modules["torchaudio.functional.functional"]._hz_to_mel = unavailable
        sys.modules["torchaudio.functional.functional"]._mel_to_hz = unavailable
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    return VocosBackbone, ISTFTHead


class VocosCodec(nn.Module):
    """Our generator's architecture assembled from Vocos's modules (see the docstring)."""

    def __init__(self, ours: ConvNeXtGenerator, embed_kernel: int, bf16: bool = False) -> None:
        super().__init__()
        backbone, head = import_vocos()
        self.bf16 = bf16  # run the backbones under bf16 autocast, the rest in float32 (as ours)
        enc, dec = ours.encoder, ours.decoder
        self.n_fft, self.hop = enc.n_fft, enc.hop_length
        self.features = enc.features  # the same STFT features (float32, no parameters)
        width = enc.project.in_features
        hidden = enc.trunk.blocks[0].pwconv1.out_features
        self.encoder = backbone(enc.features.channels, width, hidden, len(enc.trunk.blocks))
        self.project = nn.Linear(width, enc.dimension)
        self.latent_norm = nn.LayerNorm(enc.dimension, elementwise_affine=False)
        self.decoder = backbone(enc.dimension, width, hidden, len(dec.trunk.blocks))
        self.head = head(width, self.n_fft, self.hop, padding="same")
        if embed_kernel == 1:  # the architecture of ours: copy its weights
            for backbone_, trunk in ((self.encoder, enc.trunk), (self.decoder, dec.trunk)):
                backbone_.embed = nn.Conv1d(trunk.embed.in_features, width, 1)
                rename = (("blocks.", "convnext."), ("final_norm", "final_layer_norm"))
                state = {}
                for key, value in trunk.state_dict().items():
                    for old, new in rename:
                        key = key.replace(old, new)
                    state[key] = value
                state["embed.weight"] = state["embed.weight"].unsqueeze(-1)  # (C, C_in, 1)
                backbone_.load_state_dict(state)
            self.project.load_state_dict(enc.project.state_dict())
            self.head.out.load_state_dict(dec.head.out.state_dict())

    def encode(self, wav: torch.Tensor) -> torch.Tensor:
        extra = self.n_fft - self.hop
        right = extra - extra // 2 + (-wav.shape[-1]) % self.hop  # centred frames, whole hops
        x = F.pad(wav[:, 0], (extra // 2, right))  # (B, F * hop + n_fft - hop)
        frames = x.unfold(1, self.n_fft, self.hop)  # (B, F, n_fft)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            h = self.encoder(self.features(frames).transpose(1, 2))  # (B, F, C)
        return self.latent_norm(self.project(h.float()))  # (B, F, D)

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            h = self.decoder(latent.transpose(1, 2))  # (B, F, C)
        return self.head(h.float()).unsqueeze(1)  # (B, 1, F * hop)


def against_vocos(wav: torch.Tensor, seconds: float, rounds: int) -> None:
    torch.manual_seed(0)
    ours = ConvNeXtGenerator()
    theirs = VocosCodec(ours, embed_kernel=1)
    published = VocosCodec(ours, embed_kernel=7)
    print("== (4) encoder + decoder against Vocos's modules, default sizes (width 384,")
    print(f"   MLP 1152, 8 + 8 blocks, n_fft 1280, hop 320): ours {millions(ours):.2f} M,")
    print(f"   Vocos 1x1 {millions(theirs):.2f} M, Vocos k7 {millions(published):.2f} M parameters")
    with torch.inference_mode():
        one = wav[..., :RATE]
        latent = ours.encode(one).transpose(1, 2)  # (B, F, D)
        diff_latent = (latent - theirs.encode(one)).abs().max().item()
        diff = (ours.decode(latent.transpose(1, 2)) - theirs.decode(latent)).abs().max().item()
    print(f"  same weights, max |ours - Vocos 1x1| on 1 s: latent {diff_latent:.1e}, "
          f"audio {diff:.1e}")  # fmt: skip
    assert diff_latent < 1e-3 and diff < 1e-4, "the two models do not compute the same function"
    models = {"ours": ours, "Vocos, 1x1 embedding": theirs, "Vocos, kernel-7 embedding": published}
    times_f = compare({k: forward(m, wav) for k, m in models.items()}, rounds=rounds)
    print("  forward:")
    report(times_f, seconds)
    times_fb = compare({k: forward_backward(m, wav) for k, m in models.items()}, rounds=rounds)
    print("  forward + backward:")
    report(times_fb, seconds)
    k7 = "Vocos, kernel-7 embedding"
    print(f"  Vocos k7 / ours: forward {times_f[k7] / times_f['ours']:.2f}, "
          f"forward + backward {times_fb[k7] / times_fb['ours']:.2f}")  # fmt: skip
    ours16 = ConvNeXtGenerator(trunk_precision="bfloat16")
    ours16.load_state_dict(ours.state_dict())
    theirs16 = VocosCodec(ours16, embed_kernel=1, bf16=True)
    times_16 = compare({"ours": forward_backward(ours16, wav),
                        "Vocos, 1x1 embedding": forward_backward(theirs16, wav)}, rounds=rounds)  # fmt: skip
    print("  forward + backward, trunks under bf16 autocast (STFT, latent and head float32):")
    report(times_16, seconds)
    print(f"  bf16 ratio: {times_16['Vocos, 1x1 embedding'] / times_16['ours']:.2f}")
    print(f"forward ratio: {times_f['Vocos, 1x1 embedding'] / times_f['ours']:.2f}")
    print_ratio(times_fb["Vocos, 1x1 embedding"] / times_fb["ours"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="audio length per call")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds per function")
    parser.add_argument("--input", default=None, help="audio folder (default: data_prep/samples)")
    parser.add_argument("--sections", default="seanet,rates,vocos",
                        help="comma-separated: seanet, rates, depthwise, vocos")  # fmt: skip
    args = parser.parse_args()
    one_thread()
    torch.manual_seed(0)
    sections = set(args.sections.split(","))
    clips = load_corpus(args.input, RATE, max_seconds=args.seconds)
    audio = np.resize(np.concatenate(clips), int(args.seconds * RATE))  # repeats a short corpus
    wav = torch.from_numpy(audio).view(1, 1, -1)  # (1, 1, T)
    if "depthwise" in sections:
        depthwise(args.rounds)
    if "seanet" in sections:
        against_seanet(wav, args.seconds, args.rounds)
    if "rates" in sections:
        sample_rates(audio, args.seconds, args.rounds)
    if "vocos" in sections:
        against_vocos(wav, args.seconds, args.rounds)


if __name__ == "__main__":
    main()
