"""ONNX export of a :class:`~lit_codec.codec.Codec`: encoder and decoder graphs for onnxruntime.

    from lit_codec import Codec
    from lit_codec.onnx_export import export_onnx
    codec = Codec.from_checkpoint("runs/speech/checkpoints/last.ckpt")
    export = export_onnx(codec, "codec_onnx", n_q=6)     # or `lit-codec export --format onnx`
    # encoder.onnx: audio (B, 1, T) float32 -> codes (B, n_q, ceil(T / hop)) int64
    # decoder.onnx: codes (B, n_q, F) int64 -> audio (B, 1, F * hop) float32
    # codec.json:   rates, sizes, fingerprint, opset, input/output names (and step graphs)

Run them without torch with :class:`lit_codec.onnx_runtime.OnnxCodec`.

What a graph holds: ``encoder.onnx`` is the generator's ``encode`` and the quantizer's nearest
code search (RVQ) or rounding (FSQ) in one graph; ``decoder.onnx`` the code lookup and the
generator's ``decode``. Batch and length are dynamic; the number of codebooks is fixed at
export (``n_q``, all of them by default). The audio equals :meth:`Codec.decode`'s to float
rounding (``tests/test_onnx_export.py`` checks 1e-5; measured 1.5e-7 on its tiny codecs,
1e-7 on the speech recipe's codec, ``bench/onnx_speed.py``). The codes equal
:meth:`Codec.encode`'s except where a latent lies within float rounding of a decision
boundary (two codes at the same distance, an FSQ value on a rounding edge): the graphs compute
the same function with other kernels, so their latents differ from PyTorch's by rounding
(most in the ConvNeXt encoder, whose log-magnitude features of near-silent bins come from a
DFT matrix instead of an FFT; both are that far from the exact spectrum). Measured: RVQ codecs
gave identical codes on all test audio and on 10 s with the speech recipe's codec (6000 of
6000); a tiny ConvNeXt codec with three FSQ stages differed in 1 code of 14040 (one level of
its finest stage).

Streaming steps (``encoder_step.onnx``, ``decoder_step.onnx``) are exported for a *causal*
:class:`~lit_codec.nn.convnext_codec.ConvNeXtGenerator`: its state is small and fixed (the
last ``n_fft - hop`` samples of the analysis, ``kernel_size - 1`` frames per depthwise
convolution, the overlap-add tail and the count of samples emitted), so each step takes
whole frames (``m * hop`` samples, or ``m`` frames of codes, ``m >= 1`` dynamic) and the state
tensors as inputs and returns the next state as outputs; chained steps equal
:meth:`Codec.streaming`. SEANet generators and non-causal ConvNeXt generators get the
offline graphs only (SEANet streams in PyTorch through recorded step programs whose state
is a tail per convolution; a step graph for it is not written yet; a non-causal model
cannot stream).

How it exports: the TorchScript-based ``torch.onnx.export`` (``dynamo=False``) with
``dynamic_axes``, opset :data:`DEFAULT_OPSET`: it records the shape arithmetic of the traced
call (lengths, paddings, frame counts) as graph operations, so one trace serves every batch
and length, for both generator families. The ``torch.export``-based exporter
(``dynamo=True``, torch 2.13 with ``onnxscript`` 0.7, a package the ``onnx`` extra does not
carry) exported the SEANet codec (5x slower) but not the ConvNeXt one: ``torch.export``'s
shape-constraint solver failed on the dynamic length ("Cannot create Dim with inconsistent
min=0, max=-oo").

While exporting, the layers whose inference paths use custom memory layouts or operators
ONNX lacks, and the quantizers, run export-friendly equivalents of the same functions
(:mod:`lit_codec.onnx_layers`: plain convolutions, DFT matrices instead of FFTs, the code
search without caches; the ConvNeXt trunks in float32).

Weight norm is folded (:class:`Codec` folds it when it loads).
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lit_codec.codec import Codec
from lit_codec.nn.conv import is_streaming
from lit_codec.nn.convnext_codec import ConvNeXtGenerator
from lit_codec.nn.fsq import ResidualFSQ
from lit_codec.nn.quantization import ResidualVectorQuantizer
from lit_codec.onnx_layers import (
    BATCH,
    StepStates,
    exportable,
    quantizer_decode,
    quantizer_encode,
    step_states,
)

__all__ = [
    "DEFAULT_OPSET",
    "FORMAT",
    "MAX_OPSET",
    "OnnxExport",
    "OnnxGraph",
    "export_onnx",
]

FORMAT = "lit-codec/onnx"
"""The ``format`` field of ``codec.json``."""

DEFAULT_OPSET = 17
"""ONNX opset of the exported graphs (17: LayerNormalization; onnxruntime >= 1.18 runs it)."""

MAX_OPSET = 20
"""The highest opset the TorchScript-based exporter writes."""

SAMPLES, FRAMES = "samples", "frames"  # names of the dynamic axes (and BATCH)


@dataclass(frozen=True)
class OnnxGraph:
    """One exported graph: its file and the names and shapes of its inputs and outputs.

    Attributes:
        path: the ``.onnx`` file.
        inputs: input name -> shape (ints, or the names of dynamic axes).
        outputs: output name -> shape.
        states: for a streaming step, state input name -> the output that holds its next
            value (feed each output back as that input on the next call); empty otherwise.
    """

    path: Path
    inputs: dict[str, list[int | str]]
    outputs: dict[str, list[int | str]]
    states: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """The graph's entry in ``codec.json`` (file name relative to the folder)."""
        return {
            "file": self.path.name,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "states": self.states,
        }


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote.

    Attributes:
        directory: the output folder.
        metadata: ``codec.json`` (everything below, for :class:`~lit_codec.onnx_runtime.OnnxCodec`).
        encoder: ``encoder.onnx``: ``audio`` (B, 1, T) float32 -> ``codes`` (B, n_q, F) int64.
        decoder: ``decoder.onnx``: ``codes`` (B, n_q, F) int64 -> ``audio`` (B, 1, F * hop).
        encoder_step: ``encoder_step.onnx`` for a causal ConvNeXt generator, else None.
        decoder_step: ``decoder_step.onnx`` likewise.
        sample_rate: audio rate in Hz.
        hop_length: samples per frame.
        n_q: codebooks the graphs use.
        codebook_size: codes per codebook.
        fingerprint: :attr:`Codec.fingerprint` of the exported codec.
        opset: ONNX opset of the graphs.
        exporter: which ``torch.onnx`` exporter wrote them.
    """

    directory: Path
    metadata: Path
    encoder: OnnxGraph
    decoder: OnnxGraph
    encoder_step: OnnxGraph | None
    decoder_step: OnnxGraph | None
    sample_rate: int
    hop_length: int
    n_q: int
    codebook_size: int
    fingerprint: str
    opset: int
    exporter: str


def export_onnx(
    codec: Codec, out_dir: str | os.PathLike, n_q: int | None = None, opset: int = DEFAULT_OPSET
) -> OnnxExport:
    """Write ``codec`` as ONNX graphs and ``codec.json`` into ``out_dir`` (created if needed).

    Args:
        codec: the codec to export (its generator and quantizer are not changed).
        out_dir: folder to write ``encoder.onnx``, ``decoder.onnx``, ``codec.json`` and, for a
            causal ConvNeXt generator, ``encoder_step.onnx`` and ``decoder_step.onnx`` into.
        n_q: codebooks the graphs encode and decode (default: all).
        opset: ONNX opset, 17 (LayerNormalization) to 20.

    Returns:
        :class:`OnnxExport`: the paths and the metadata written.

    Raises:
        ValueError: ``n_q`` or ``opset`` out of range, a codec in streaming mode or
            not on the CPU, or a quantizer this exporter does not know.

    A codec trained with a denoising flag is exported with the flag off (it reconstructs).
    """
    n_q = codec.resolve_n_q(n_q)
    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise ValueError(f"opset must be in {DEFAULT_OPSET}..{MAX_OPSET}, not {opset}")
    if is_streaming(codec):
        raise ValueError("the codec is in streaming mode: export it outside `codec.streaming()`")
    if codec._device().type != "cpu":
        raise ValueError(
            f"export from the CPU (the codec is on {codec._device()}): "
            "Codec.from_checkpoint(path, map_location='cpu')"
        )
    if not isinstance(codec.quantizer, (ResidualVectorQuantizer, ResidualFSQ)):
        raise ValueError(
            f"cannot export a {type(codec.quantizer).__name__} quantizer to ONNX "
            "(ResidualVectorQuantizer and ResidualFSQ are supported)"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "codec.json").unlink(missing_ok=True)  # written last: a failed export has none
    hop = codec.hop_length
    was_training = codec.training
    codec.eval()
    try:
        with torch.no_grad(), exportable(codec.generator):
            encoder = _export_graph(
                _EncoderGraph(codec, n_q),
                (torch.zeros(2, 1, 5 * hop + 3),),
                out / "encoder.onnx",
                {"audio": [BATCH, 1, SAMPLES]},
                {"codes": [BATCH, n_q, FRAMES]},
                opset,
            )
            decoder = _export_graph(
                _DecoderGraph(codec),
                (torch.zeros(2, n_q, 5, dtype=torch.long),),
                out / "decoder.onnx",
                {"codes": [BATCH, n_q, FRAMES]},
                {"audio": [BATCH, 1, SAMPLES]},
                opset,
            )
        encoder_step = decoder_step = None
        if _streams_by_step(codec.generator):
            with torch.no_grad():
                encoder_step, decoder_step = _export_steps(codec, n_q, out, opset)
    finally:
        codec.train(was_training)
    export = OnnxExport(
        directory=out,
        metadata=out / "codec.json",
        encoder=encoder,
        decoder=decoder,
        encoder_step=encoder_step,
        decoder_step=decoder_step,
        sample_rate=codec.sample_rate,
        hop_length=hop,
        n_q=n_q,
        codebook_size=codec.codebook_size,
        fingerprint=codec.fingerprint,
        opset=opset,
        exporter=EXPORTER,
    )
    _write_metadata(export, codec)
    return export


def _write_metadata(export: OnnxExport, codec: Codec) -> None:
    graphs = {"encoder": export.encoder, "decoder": export.decoder}
    if export.encoder_step is not None and export.decoder_step is not None:
        graphs |= {"encoder_step": export.encoder_step, "decoder_step": export.decoder_step}
    meta = {
        "format": FORMAT,
        "version": 1,
        "sample_rate": export.sample_rate,
        "hop_length": export.hop_length,
        "frame_rate": export.sample_rate / export.hop_length,
        "n_q": export.n_q,
        "codebook_size": export.codebook_size,
        "kbps": codec.quantizer.kbps(export.n_q),
        "fingerprint": export.fingerprint,
        "generator": type(codec.generator).__name__,
        "quantizer": type(codec.quantizer).__name__,
        "opset": export.opset,
        "exporter": export.exporter,
        "graphs": {name: graph.describe() for name, graph in graphs.items()},
    }
    export.metadata.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- the exporter
EXPORTER = "torch.onnx.export (TorchScript, dynamo=False)"


def _export_graph(
    module: nn.Module,
    args: tuple[Tensor, ...],
    path: Path,
    inputs: dict[str, list[int | str]],
    outputs: dict[str, list[int | str]],
    opset: int,
    states: dict[str, str] | None = None,
) -> OnnxGraph:
    """Export ``module`` called on ``args`` to ``path`` with the TorchScript-based exporter
    (see the module docstring); every axis named by a string is dynamic."""
    dynamic = {
        name: {axis: size for axis, size in enumerate(shape) if isinstance(size, str)}
        for name, shape in (inputs | outputs).items()
    }
    with warnings.catch_warnings():
        # the TorchScript exporter's deprecation notice, and tracer warnings about shape
        # arithmetic it records (checked by the tests against PyTorch at other lengths)
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            args,
            str(path),
            dynamo=False,
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
        )
    return OnnxGraph(path, inputs, outputs, dict(states or {}))


# --------------------------------------------------------------------------- offline graphs
class _EncoderGraph(nn.Module):
    """``audio`` (B, 1, T) -> ``codes`` (B, n_q, ceil(T / hop)): generator and quantizer."""

    def __init__(self, codec: Codec, n_q: int) -> None:
        super().__init__()
        self.codec = codec
        self.n_q = n_q

    def forward(self, audio: Tensor) -> Tensor:
        hop = self.codec.hop_length
        # The zeros Codec.encode's generator would add (so its own test for padding finds none).
        audio = F.pad(audio, (0, (-audio.shape[-1]) % hop))  # (B, 1, F * hop)
        latent = self.codec.generator.encode(audio)  # (B, D, F)
        return quantizer_encode(self.codec.quantizer, latent, self.n_q)  # (B, n_q, F)


class _DecoderGraph(nn.Module):
    """``codes`` (B, n_q, F) -> ``audio`` (B, 1, F * hop): code lookup and generator."""

    def __init__(self, codec: Codec) -> None:
        super().__init__()
        self.codec = codec

    def forward(self, codes: Tensor) -> Tensor:
        latent = quantizer_decode(self.codec.quantizer, codes)  # (B, D, F)
        return self.codec.generator.decode(latent)  # (B, 1, F * hop)


# --------------------------------------------------------------------------- streaming steps
def _streams_by_step(generator: nn.Module) -> bool:
    """Whether step graphs exist for ``generator``: a causal ConvNeXt generator whose frames
    overlap (``n_fft > hop_length``, so every state is non-empty)."""
    return (
        isinstance(generator, ConvNeXtGenerator)
        and generator.causal
        and generator.encoder.n_fft > generator.hop_length
    )


class _StepGraph(nn.Module):
    """One streaming step: ``(x, *state) -> (y, *next state)`` for the exporter to trace."""

    def __init__(self, codec: Codec, run, names: list[str], states: StepStates) -> None:
        super().__init__()
        self.codec = codec  # its parameters become the graph's initializers
        self.run = run
        self.names = names
        self.states = states

    def forward(self, x: Tensor, *state: Tensor) -> tuple[Tensor, ...]:
        self.states.given = dict(zip(self.names, state))
        self.states.next = {}
        y = self.run(x)
        return (y, *(self.states.next[name] for name in self.names))


def _export_steps(codec: Codec, n_q: int, out: Path, opset: int) -> tuple[OnnxGraph, OnnxGraph]:
    """``encoder_step.onnx``: ``audio`` (B, 1, m * hop) and the encoder state -> ``codes``
    (B, n_q, m) and its next value; ``decoder_step.onnx``: ``codes`` (B, n_q, m) and the
    decoder state -> ``audio`` (B, 1, m * hop) and its next value."""
    generator, quantizer, hop = codec.generator, codec.quantizer, codec.hop_length
    states = StepStates()
    graphs = []
    parts = {
        "encoder": (
            lambda audio: quantizer_encode(quantizer, generator.encode(audio), n_q),
            torch.zeros(2, 1, 3 * hop),
            ("audio", [BATCH, 1, SAMPLES]),
            ("codes", [BATCH, n_q, FRAMES]),
        ),
        "decoder": (
            lambda codes: generator.decode(quantizer_decode(quantizer, codes)),
            torch.zeros(2, n_q, 3, dtype=torch.long),
            ("codes", [BATCH, n_q, FRAMES]),
            ("audio", [BATCH, 1, SAMPLES]),
        ),
    }
    with exportable(generator, states):
        for part, (run, example, (x_name, x_shape), (y_name, y_shape)) in parts.items():
            specs = step_states(generator, part)
            names = list(specs)
            zeros = tuple(
                torch.zeros([2 if d == BATCH else d for d in shape], dtype=dtype)
                for shape, dtype in specs.values()
            )
            graphs.append(
                _export_graph(
                    _StepGraph(codec, run, names, states),
                    (example, *zeros),
                    out / f"{part}_step.onnx",
                    {x_name: x_shape} | {f"state.{n}": specs[n][0] for n in names},
                    {y_name: y_shape} | {f"next.{n}": specs[n][0] for n in names},
                    opset,
                    states={f"state.{n}": f"next.{n}" for n in names},
                )
            )
    return graphs[0], graphs[1]
