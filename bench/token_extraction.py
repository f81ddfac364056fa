"""Token extraction: codec tokenization of audio shards by CodecTokenizer, against the encoder alone.

The codec-LM data path starts by turning audio shards into codes (what
``data_prep/make_token_shards.py`` does for every target and audio condition). This measures
that step with the shipped codec (``--codec speech16k``: ConvNeXt encoder, 12 x 1024 RVQ, 50
frames/s) on one thread, as process CPU time, so every figure is per CPU core:

1. ours, the pipeline: read the shards of ``--input`` in order
   (:func:`lit_codec.data.shards.iter_tar_samples`), decode each FLAC and its metadata
   (:func:`~lit_codec.data.shards.decode_audio_sample`), resample to the codec's rate when the
   shards are at another one (soxr), gather groups of 60 s of clips (as make_token_shards
   does) and code each group with :meth:`CodecTokenizer.encode_batch` (sorting by length,
   batches of at most 8 s of padded audio, zero padding, ``Codec.encode``, int16 codes
   trimmed per clip). The codec's ``encode`` calls are timed inside the loop: the rest of the
   loop's time is the share spent outside the codec's forward (goal <= 20 %).
2. peer, the reference: ``Codec.encode`` alone on the same padded batches (recorded in the
   first pipeline pass): the floor of the pipeline on this codec. ``ratio = pipeline rate /
   encoder-alone rate``: 1 would be a pipeline with no overhead, 0.8 the goal's limit.

``--int8``: the same two, again with the encoder's ``nn.Linear`` layers (input embedding,
ConvNeXt MLPs, latent projection: 83 % of the encoder + quantizer's counted FLOPs; the RVQ
search stays in float32) quantized dynamically to int8
(``torch.ao.quantization.quantize_dynamic``, fbgemm; weights per tensor, activations per
batch), and the fraction of its codes identical to the float32 codes (all codebooks, and the
first). The question it answers: is the goal of >= 100x real time per core reachable on this
AVX2-only CPU? To make the bound visible the script prints the encoder + quantizer's FLOPs
per second of audio (matrix products and convolutions, counted by
``torch.utils.flop_counter``; the FFT and element-wise work are not counted) and the
machine's measured one-thread rates (CPU time) of the trunk's two MLP products, ``(400 x 384)
@ (384 x 1152)`` and ``(400 x 1152) @ (1152 x 384)`` (one 8 s batch of frames), and of a
1024 x 1024 x 1024 product, each in float32 (``F.linear``) and as a dynamic int8 linear
layer: FLOPs per second of audio over a rate is the real-time factor the codec would reach if
every counted FLOP ran at that rate.

Rounds: one untimed warm-up pass of each side, then ``--rounds`` alternating rounds
(pipeline, encoder alone, [int8 pipeline, int8 encoder alone]); each figure is the median
over rounds of seconds of audio coded per CPU second.

Input: an audio-shard directory (``index.json`` + tar shards from
``data_prep/make_audio_shards.py``; every split, in the index's order) or a folder of audio
files (default: the shipped ``data_prep/samples``), which is first made into 16 kHz shards
(untimed). ``--seconds`` caps the audio coded per pass (the clips up to the one that crosses
it).

Run: ``OMP_NUM_THREADS=1 python bench/token_extraction.py [--input DIR] [--seconds 600]
[--rounds 3] [--int8]``. The last line is ``ratio:`` of the float32 pipeline.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
import numpy as np
import torch
import torch.nn.functional as F
from _common import SAMPLES, compare, one_thread, print_ratio

from lit_codec.codec import Codec
from lit_codec.data.audio_io import resample
from lit_codec.data.shards import decode_audio_sample, iter_tar_samples, load_index
from lit_codec.tokenizers.codec import CodecTokenizer

GROUP_SECONDS = 60.0  # clips coded together (make_token_shards' MIN_GROUP_SECONDS)
GOAL_RTF = 100.0  # seconds of audio per CPU second
GOAL_OUTSIDE = 0.20  # share of the time outside the codec's forward
ROWS, WIDTH, HIDDEN = 400, 384, 1152  # an 8 s batch's frames through a ConvNeXt MLP


def _raise(exc: Exception) -> bool:
    raise exc


# ------------------------------------------------------------------------------ input


def shard_urls(source: str | None, tmp: Path) -> tuple[list[str], str]:
    """The tar shards to read (every split), and a description of them."""
    root = Path(source) if source is not None else SAMPLES
    if not (root / "index.json").is_file():  # a folder of audio files: shard it (untimed)
        from lit_codec.data.prepare import PrepareSettings, prepare_shards

        out = tmp / "shards"
        prepare_shards([root], out, PrepareSettings(sample_rate=16000), workers=1, progress=False)
        root = out
    index = load_index(root)
    urls, seconds = [], 0.0
    for info in index["splits"].values():
        urls += [str(root / name) for name in info["shards"]]
        seconds += float(info.get("seconds") or 0.0)
    what = (
        f"{source or SAMPLES}: {len(urls)} shard(s), {seconds:.0f} s at {index['sample_rate']} Hz"
    )
    return urls, what


# ------------------------------------------------------------------------------ the sides


class TimedEncode:
    """Wraps ``codec.encode``: CPU time inside the calls; records the padded batches."""

    def __init__(self, codec: Codec) -> None:
        self.inner = codec.encode
        self.cpu = 0.0
        self.record: list[torch.Tensor] | None = None
        codec.encode = self  # an instance attribute: CodecTokenizer calls it

    def __call__(self, wav: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        if self.record is not None:
            self.record.append(wav)  # (B, 1, T), a fresh tensor per call: no copy needed
        start = time.process_time()
        out = self.inner(wav, *args, **kwargs)
        self.cpu += time.process_time() - start
        return out


class Side:
    """One codec (float32 or int8) as a pipeline over the shards and as the encoder alone."""

    def __init__(self, codec: Codec, urls: list[str], max_seconds: float | None) -> None:
        self.tok = CodecTokenizer(codec)
        self.timed = TimedEncode(self.tok.codec)
        self.urls, self.max_seconds = urls, max_seconds
        self.batches: list[torch.Tensor] = []
        self.codes: list[np.ndarray] = []
        self.seconds = 0.0
        self.runs: dict[str, list[tuple[float, float, float]]] = {"pipeline": [], "encoder": []}

    def pipeline(self, record: bool = False) -> None:
        """One pass: read, decode, resample, group, encode_batch; (cpu, encode cpu, wall)."""
        tok, rate = self.tok, self.tok.sample_rate
        self.timed.cpu, self.timed.record = 0.0, ([] if record else None)
        codes, group, pending, seconds = [], [], 0, 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        for raw in iter_tar_samples(self.urls, _raise):
            audio, sr, _ = decode_audio_sample(raw)  # (T,) float32, the JSON metadata parsed
            audio = resample(audio, sr, rate)
            group.append(audio)
            pending += len(audio)
            seconds += len(audio) / rate
            if pending >= GROUP_SECONDS * rate:
                codes += tok.encode_batch(group, rate)  # [(F_i, n_q) int16]
                group, pending = [], 0
            if self.max_seconds is not None and seconds >= self.max_seconds:
                break
        if group:
            codes += tok.encode_batch(group, rate)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        self.codes, self.seconds = codes, seconds
        if record:
            self.batches, self.timed.record = self.timed.record, None
        self.runs["pipeline"].append((cpu, self.timed.cpu, wall))

    def encoder(self) -> None:
        """``Codec.encode`` alone on the recorded padded batches."""
        n_q, encode = self.tok.n_q, self.timed.inner
        wall, cpu = time.perf_counter(), time.process_time()
        for wav in self.batches:
            encode(wav, n_q=n_q)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        self.runs["encoder"].append((cpu, cpu, wall))

    def rate(self, name: str) -> float:
        """Median seconds of audio per CPU second."""
        return statistics.median(self.seconds / cpu for cpu, _, _ in self.runs[name])

    def outside(self) -> float:
        """Median share of the pipeline's CPU time outside the codec's encode calls."""
        return statistics.median(1 - inside / cpu for cpu, inside, _ in self.runs["pipeline"])

    def inside_rate(self) -> float:
        """Median seconds of audio per CPU second of the encode calls inside the pipeline."""
        return statistics.median(self.seconds / inside for _, inside, _ in self.runs["pipeline"])

    def wall_rate(self, name: str) -> float:
        return statistics.median(self.seconds / wall for _, _, wall in self.runs[name])

    def padded_seconds(self) -> float:
        return sum(w.shape[0] * w.shape[-1] for w in self.batches) / self.tok.sample_rate


def int8_codec(codec: Codec) -> Codec:
    """A copy of ``codec`` with its encoder's Linear layers dynamically quantized to int8."""
    from torch.ao.quantization import quantize_dynamic

    if "fbgemm" in torch.backends.quantized.supported_engines:
        torch.backends.quantized.engine = "fbgemm"
    out = copy.deepcopy(codec)
    encoder = out.generator.encoder
    out.generator.encoder = quantize_dynamic(encoder, {torch.nn.Linear}, dtype=torch.qint8)
    return out


# ------------------------------------------------------------------------------ the bound


def flops_per_second(codec: Codec, seconds: float = 8.0) -> tuple[float, float]:
    """FLOPs of ``Codec.encode`` per second of audio: (all counted, the Linear layers')."""
    encode = type(codec).encode.__get__(codec)  # the method, not a TimedEncode wrapper
    from torch.utils.flop_counter import FlopCounterMode

    wav = 0.1 * torch.randn(
        1, 1, int(seconds * codec.sample_rate), generator=torch.Generator().manual_seed(0)
    )
    counter = FlopCounterMode(display=False)
    with counter:
        encode(wav)
    total = counter.get_total_flops()
    linear = 0
    for m in codec.generator.encoder.modules():
        if isinstance(m, torch.nn.Linear):
            frames = -(-wav.shape[-1] // codec.hop_length)
            linear += 2 * frames * m.in_features * m.out_features
    return total / seconds, linear / seconds


SHAPES = {  # rows x inner x out
    "MLP up": (ROWS, WIDTH, HIDDEN),
    "MLP down": (ROWS, HIDDEN, WIDTH),
    "square": (1024, 1024, 1024),
}


def matmul_rates(rounds: int, calls: int = 20) -> dict[str, tuple[float, float]]:
    """One-thread (float32 FLOP/s, dynamic int8 OP/s) of ``(rows x inner) @ (inner x out)``
    per shape of :data:`SHAPES`: ``F.linear`` against a dynamically quantized ``nn.Linear``
    on the same input; CPU time, median of blocks of ``calls`` calls, alternating."""
    from torch.ao.quantization import quantize_dynamic

    fns = {}
    for name, (rows, inner, out) in SHAPES.items():
        x, layer = torch.randn(rows, inner), torch.nn.Linear(inner, out)
        q = quantize_dynamic(torch.nn.Sequential(layer), {torch.nn.Linear}, dtype=torch.qint8)
        w, b = layer.weight.detach(), layer.bias.detach()
        fns[(name, "fp32")] = lambda x=x, w=w, b=b: F.linear(x, w, b)
        fns[(name, "int8")] = lambda x=x, q=q: q(x)
    times: dict[tuple[str, str], list[float]] = {key: [] for key in fns}
    with torch.inference_mode():
        for round_ in range(max(rounds, 5) + 1):  # the first: warm-up
            for key, fn in fns.items():
                start = time.process_time()
                for _ in range(calls):
                    fn()
                if round_:
                    times[key].append((time.process_time() - start) / calls)
    rates = {}
    for name, (rows, inner, out) in SHAPES.items():
        flops = 2 * rows * inner * out
        fp32 = flops / statistics.median(times[(name, "fp32")])
        rates[name] = (fp32, flops / statistics.median(times[(name, "int8")]))
    return rates


# ------------------------------------------------------------------------------ main


def identical(
    ours: list[np.ndarray], reference: list[np.ndarray]
) -> tuple[float, float, list[float]]:
    """Fraction of codes equal to the reference: all codebooks, the first, per codebook."""
    a, b = np.concatenate(ours), np.concatenate(reference)  # (frames, n_q)
    same = a == b
    return float(same.mean()), float(same[:, 0].mean()), [float(x) for x in same.mean(axis=0)]


def report(name: str, side: Side, goal: bool) -> None:
    pipe, alone, outside = side.rate("pipeline"), side.rate("encoder"), side.outside()
    mark = lambda ok: "met" if ok else "NOT met"  # noqa: E731
    print(f"{name}:")
    print(f"  pipeline (read, decode, resample, batch, encode, int16): {pipe:6.1f}x real time per core "
          f"(CPU time; wall {side.wall_rate('pipeline'):.1f}x)" + (f"  [goal >= {GOAL_RTF:g}x: {mark(pipe >= GOAL_RTF)}]" if goal else ""))  # fmt: skip
    print(f"  of its CPU time outside Codec.encode: {100 * outside:5.1f} %" + (f"  [goal <= {100 * GOAL_OUTSIDE:g} %: {mark(outside <= GOAL_OUTSIDE)}]" if goal else ""))  # fmt: skip
    print(f"  its Codec.encode calls alone: {side.inside_rate():6.1f}x real time per core")
    print(f"  Codec.encode alone on the same padded batches: {alone:6.1f}x real time per core "
          f"(wall {side.wall_rate('encoder'):.1f}x); pipeline / encoder alone = {pipe / alone:.2f}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", default=None, help="audio-shard directory or audio folder (default: data_prep/samples)")  # fmt: skip
    parser.add_argument("--codec", default="speech16k", help="codec name, .ckpt or .safetensors")
    parser.add_argument("--seconds", type=float, default=None, help="audio coded per pass at most (default: all)")  # fmt: skip
    parser.add_argument("--rounds", type=int, default=3, help="timed passes of each side")
    parser.add_argument("--int8", action="store_true", help="also the int8 (dynamic) encoder")
    args = parser.parse_args()
    one_thread()
    warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\.ao\..*")
    warnings.filterwarnings("ignore", message=r".*(quantiz|deprecated).*")
    torch.manual_seed(0)

    codec = Codec.from_checkpoint(args.codec)
    with tempfile.TemporaryDirectory() as tmp:
        urls, what = shard_urls(args.input, Path(tmp))
        quantized = int8_codec(codec) if args.int8 else None  # before Side wraps codec.encode
        sides = {"float32": Side(codec, urls, args.seconds)}
        if quantized is not None:
            sides["int8"] = Side(quantized, urls, args.seconds)
        for side in sides.values():  # warm-up, and the padded batches of the encoder alone
            side.pipeline(record=True)
            side.encoder()
            side.runs = {"pipeline": [], "encoder": []}
        fns: dict[str, Callable[[], object]] = {}
        for name, side in sides.items():
            fns[f"{name} pipeline"] = side.pipeline
            fns[f"{name} encoder"] = side.encoder
        compare(fns, rounds=args.rounds, warmup=0)  # alternating; the sides keep CPU times

    ref = sides["float32"]
    flops, linear = flops_per_second(codec)
    rates = matmul_rates(args.rounds)
    tok = ref.tok
    print(f"codec {args.codec} ({tok.codec.fingerprint}): {tok.sample_rate} Hz, {tok.frame_rate:g} frames/s, "
          f"{tok.n_q} x {tok.codebook_size} codes; batches of <= {tok.max_batch_seconds:g} s, groups of {GROUP_SECONDS:g} s")  # fmt: skip
    print(f"audio: {what}; coded per pass: {len(ref.codes)} clips, {ref.seconds:.1f} s "
          f"({ref.padded_seconds():.1f} s padded, in {len(ref.batches)} encode calls); {torch.get_num_threads()} thread, "
          f"median of {args.rounds} rounds")  # fmt: skip
    print(f"encoder + quantizer: {flops / 1e9:.2f} GFLOP per second of audio (matmul/conv; "
          f"Linear layers {linear / flops:.0%}); {GOAL_RTF:g}x real time needs {GOAL_RTF * flops / 1e9:.0f} GFLOP/s")  # fmt: skip
    print("machine, one thread (CPU time): " + "; ".join(
        f"{name} ({r} x {i}) @ ({i} x {o}) float32 {rates[name][0] / 1e9:.1f} GFLOP/s, int8 {rates[name][1] / 1e9:.1f} GOP/s"
        for name, (r, i, o) in SHAPES.items()))  # fmt: skip
    best = max(fp32 for fp32, _ in rates.values())
    trunk_fp32 = statistics.mean(rates[n][0] for n in ("MLP up", "MLP down"))
    trunk_int8 = statistics.mean(rates[n][1] for n in ("MLP up", "MLP down"))
    mixed = 1 / (linear / trunk_int8 + (flops - linear) / trunk_fp32)
    print(f"bound (every counted FLOP at a product's rate): float32 at the best rate ({best / 1e9:.1f}) "
          f"{best / flops:.0f}x, at the MLP products' ({trunk_fp32 / 1e9:.1f}) {trunk_fp32 / flops:.0f}x; "
          f"Linear layers in int8 ({trunk_int8 / 1e9:.1f}) + the rest in float32 {mixed:.0f}x real time per core")  # fmt: skip
    report("float32 (as shipped)", ref, goal=True)
    if "int8" in sides:
        q = sides["int8"]
        report("int8 dynamic encoder Linear layers", q, goal=False)
        every, first, per = identical(q.codes, ref.codes)
        print(f"  codes identical to float32: {100 * every:.1f} % of all, {100 * first:.1f} % of the first codebook; "
              f"per codebook {' '.join(f'{100 * x:.0f}' for x in per)} %")  # fmt: skip
        print(
            f"  int8 pipeline / float32 pipeline: {q.rate('pipeline') / ref.rate('pipeline'):.2f}"
        )
    print("float32 pipeline / Codec.encode alone (1 = no overhead; goal >= 0.8):")
    print_ratio(ref.rate("pipeline") / ref.rate("encoder"))


if __name__ == "__main__":
    main()
