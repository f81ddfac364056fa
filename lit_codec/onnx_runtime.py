"""``OnnxCodec``: run a codec exported by ``lit-codec export --format onnx`` with onnxruntime.

    from lit_codec.onnx_runtime import OnnxCodec
    codec = OnnxCodec("codec_onnx")               # encoder.onnx, decoder.onnx, codec.json
    codes = codec.encode(wav)                     # float32 (T,), (B, T) or (B, 1, T) -> (B, n_q, F) int64
    audio = codec.decode(codes)                   # (B, 1, F * hop) float32
    with codec.streaming(batch_size=1) as stream: # a causal ConvNeXt export (step graphs)
        codes = stream.encode(chunk)              # chunks of any size, the frames they complete
        audio = stream.decode(codes)
        codes = stream.flush()                    # the last, zero-padded frame

This module needs NumPy and onnxruntime only (``pip install lit-codec[onnx]`` brings them):
importing it, or ``lit_codec``, loads no torch. The graphs are written by
:func:`lit_codec.onnx_export.export_onnx`, whose docstring says what they hold.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["OnnxCodec", "OnnxStream"]

FORMAT = "lit-codec/onnx"  # lit_codec.onnx_export.FORMAT (not imported: that module needs torch)
REQUIRED = ("sample_rate", "hop_length", "n_q", "codebook_size", "fingerprint", "kbps", "graphs")
EXPECTED = "expected a folder written by `lit-codec export --format onnx` (codec.json, encoder.onnx, decoder.onnx)"


class OnnxCodec:
    """An exported codec run by onnxruntime: encode audio to codes, decode codes to audio.

    Args:
        directory: the folder :func:`~lit_codec.onnx_export.export_onnx` wrote.
        threads: onnxruntime's intra-op threads per graph (1, as lit-codec's commands default
            to: on a small shared machine more threads are slower, not faster).
        providers: onnxruntime execution providers (default: the CPU's).

    Raises:
        FileNotFoundError: ``directory`` or a file ``codec.json`` names does not exist.
        ValueError: ``codec.json`` is not the metadata of a lit-codec ONNX export.
    """

    def __init__(
        self,
        directory: str | os.PathLike,
        threads: int = 1,
        providers: tuple[str, ...] = ("CPUExecutionProvider",),
    ) -> None:
        self.directory = Path(directory)
        meta_path = self.directory / "codec.json"
        if not self.directory.is_dir():
            raise FileNotFoundError(f"{self.directory} is not a folder ({EXPECTED})")
        if not meta_path.is_file():
            raise FileNotFoundError(f"{self.directory} has no codec.json ({EXPECTED})")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{meta_path} is not JSON ({e}): {EXPECTED}") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise ValueError(f"{meta_path} is not lit-codec's ONNX metadata: {EXPECTED}")
        if meta.get("version") != 1:
            raise ValueError(
                f"{meta_path}: version {meta.get('version')} is not 1, the one this reads"
            )
        missing = [k for k in REQUIRED if k not in meta] + [
            g for g in ("encoder", "decoder") if g not in meta.get("graphs", {})
        ]
        if missing:
            raise ValueError(f"{meta_path} lacks {', '.join(missing)}: {EXPECTED}")
        self.metadata: dict[str, Any] = meta
        self.sample_rate = int(meta["sample_rate"])
        self.hop_length = int(meta["hop_length"])
        self.n_q = int(meta["n_q"])
        self.codebook_size = int(meta["codebook_size"])
        self.fingerprint = str(meta["fingerprint"])
        self.kbps = float(meta["kbps"])
        self._threads = threads
        self._providers = list(providers)
        self._sessions: dict[str, Any] = {}
        self._encoder = self._session("encoder")
        self._decoder = self._session("decoder")

    @property
    def frame_rate(self) -> float:
        """Frames (codes per codebook) per second."""
        return self.sample_rate / self.hop_length

    @property
    def streams(self) -> bool:
        """Whether the export holds streaming step graphs (a causal ConvNeXt codec)."""
        return "encoder_step" in self.metadata["graphs"]

    def _session(self, graph: str):
        """The onnxruntime session of ``graph`` (``"encoder"``, ``"decoder_step"``...), made once."""
        if graph not in self._sessions:
            try:
                import onnxruntime as ort
            except ImportError:
                raise ImportError(
                    "OnnxCodec runs the graphs with onnxruntime: pip install 'lit-codec[onnx]'"
                ) from None

            path = self.directory / self.metadata["graphs"][graph]["file"]
            if not path.is_file():
                raise FileNotFoundError(f"{path} does not exist ({EXPECTED})")
            options = ort.SessionOptions()
            options.intra_op_num_threads = self._threads
            options.inter_op_num_threads = 1
            self._sessions[graph] = ort.InferenceSession(
                str(path), options, providers=self._providers
            )
        return self._sessions[graph]

    # ------------------------------------------------------------------ offline
    @staticmethod
    def _as_batch(wav: np.ndarray) -> np.ndarray:
        wav = np.asarray(wav, dtype=np.float32)
        if wav.ndim == 1:
            wav = wav[None, None]  # (1, 1, T)
        elif wav.ndim == 2:
            wav = wav[:, None]  # (B, 1, T)
        if wav.ndim != 3 or wav.shape[1] != 1:
            raise ValueError(f"expected audio (T,), (B, T) or (B, 1, T), got {wav.shape}")
        return np.ascontiguousarray(wav)

    def encode(self, wav: np.ndarray) -> np.ndarray:
        """Codes ``(B, n_q, ceil(T / hop))`` int64 of audio ``(T,)``, ``(B, T)`` or
        ``(B, 1, T)`` at :attr:`sample_rate`."""
        wav = self._as_batch(wav)
        if wav.shape[-1] == 0:
            return np.zeros((wav.shape[0], self.n_q, 0), dtype=np.int64)
        return self._encoder.run(None, {"audio": wav})[0]

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Audio ``(B, 1, F * hop)`` float32 of codes ``(B, n_q, F)`` or ``(n_q, F)``."""
        codes = self._checked_codes(codes)
        if codes.shape[-1] == 0:
            return np.zeros((codes.shape[0], 1, 0), dtype=np.float32)
        return self._decoder.run(None, {"codes": codes})[0]

    def _checked_codes(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.ndim == 2:
            codes = codes[None]  # (1, n_q, F)
        if codes.dtype.kind not in "iu":
            raise ValueError(f"codes must be integers, not {codes.dtype}")
        out_of_range = codes.size > 0 and (codes.min() < 0 or codes.max() >= self.codebook_size)
        if codes.ndim != 3 or codes.shape[1] != self.n_q or out_of_range:
            raise ValueError(
                f"codes of shape {codes.shape} do not fit this export: it decodes (B, {self.n_q}, "
                f"frames) codes in [0, {self.codebook_size})"
            )
        return np.ascontiguousarray(codes, dtype=np.int64)

    # ------------------------------------------------------------------ streaming
    @contextmanager
    def streaming(self, batch_size: int = 1) -> Iterator[OnnxStream]:
        """An :class:`OnnxStream` of ``batch_size`` streams (an export with step graphs only).

        Raises:
            ValueError: the export has no step graphs (SEANet or non-causal generators).
        """
        if not self.streams:
            raise ValueError(
                f"{self.directory} has no streaming step graphs: only a causal ConvNeXt "
                f"codec exports them (this one has a {self.metadata.get('generator')})"
            )
        yield OnnxStream(self, batch_size)


class OnnxStream:
    """Chunk-by-chunk encoding and decoding through the step graphs of an :class:`OnnxCodec`.

    The encoder step takes whole frames: :meth:`encode` keeps the samples of a partial frame
    until the next chunk completes it. Codes and audio equal :meth:`Codec.streaming`'s (and,
    the model being causal, offline coding's) to float rounding.
    """

    def __init__(self, codec: OnnxCodec, batch_size: int = 1) -> None:
        self.codec = codec
        self.batch_size = batch_size
        self._encoder = codec._session("encoder_step")
        self._decoder = codec._session("decoder_step")
        graphs = codec.metadata["graphs"]
        self._encoder_links = graphs["encoder_step"]["states"]  # state input -> its next value
        self._decoder_links = graphs["decoder_step"]["states"]
        self._encoder_state = _zero_state(self._encoder, batch_size)
        self._decoder_state = _zero_state(self._decoder, batch_size)
        self._pending = np.zeros((batch_size, 1, 0), dtype=np.float32)  # a partial frame
        self.samples_in = 0

    def encode(self, chunk: np.ndarray) -> np.ndarray:
        """Codes ``(B, n_q, m)`` of the frames this chunk ``(B, 1, n)`` (or ``(B, n)``,
        ``(n,)``) completes (``m`` may be 0)."""
        chunk = OnnxCodec._as_batch(chunk)
        if chunk.shape[0] != self.batch_size:
            raise ValueError(
                f"streaming {self.batch_size} streams, got a chunk of batch {chunk.shape[0]}"
            )
        self.samples_in += chunk.shape[-1]
        audio = np.concatenate((self._pending, chunk), axis=-1)  # (B, 1, pending + n)
        whole = audio.shape[-1] - audio.shape[-1] % self.codec.hop_length
        self._pending = audio[..., whole:]
        if whole == 0:
            return np.zeros((self.batch_size, self.codec.n_q, 0), dtype=np.int64)
        audio = np.ascontiguousarray(audio[..., :whole])  # (B, 1, m * hop)
        codes, self._encoder_state = _step(
            self._encoder, "audio", audio, self._encoder_state, self._encoder_links
        )
        return codes

    def flush(self) -> np.ndarray:
        """Complete the last partial frame with zeros (as offline encoding pads) and encode it."""
        pad = -self.samples_in % self.codec.hop_length
        if pad == 0:
            return np.zeros((self.batch_size, self.codec.n_q, 0), dtype=np.int64)
        return self.encode(np.zeros((self.batch_size, 1, pad), dtype=np.float32))

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Audio ``(B, 1, m * hop)`` of the next ``m`` frames of codes ``(B, n_q, m)``."""
        codes = self.codec._checked_codes(codes)
        if codes.shape[0] != self.batch_size:
            raise ValueError(
                f"streaming {self.batch_size} streams, got codes of batch {codes.shape[0]}"
            )
        if codes.shape[-1] == 0:
            return np.zeros((self.batch_size, 1, 0), dtype=np.float32)
        audio, self._decoder_state = _step(
            self._decoder, "codes", codes, self._decoder_state, self._decoder_links
        )
        return audio


def _zero_state(session, batch_size: int) -> dict[str, np.ndarray]:
    """Every state input of a step graph (all but the first input), zero, as a stream starts."""
    state = {}
    for spec in session.get_inputs()[1:]:
        shape = [d if isinstance(d, int) else batch_size for d in spec.shape]
        state[spec.name] = np.zeros(shape, dtype=np.int64 if "int64" in spec.type else np.float32)
    return state


def _step(
    session, name: str, x: np.ndarray, state: dict[str, np.ndarray], links: dict[str, str]
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Run one step on ``x`` (input ``name``): its first output and the next state (``links``:
    each state input -> the output that holds its next value)."""
    outputs = session.run(None, {name: x, **state})
    by_name = dict(zip((o.name for o in session.get_outputs()), outputs))
    return outputs[0], {given: by_name[following] for given, following in links.items()}
