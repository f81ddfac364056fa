"""Audio out while a codec LM is still generating: codes in as frames complete, waveform out.

:func:`lit_codec.lm.generate.generate` hands each sequence's complete target frames to its
``on_frames`` callback; an :class:`AudioStreamer` turns them into audio chunks for a sink
(a file being written, a sound card), so a listener hears the start before generation ends.

- A **causal** codec (``causal=True`` recipes) decodes through :meth:`Codec.streaming
  <lit_codec.codec.Codec.streaming>`: one frame of latency and the same samples as offline
  decoding.
- A **non-causal** codec (the shipped ``speech16k``: centred STFT frames and convolutions
  that look ahead) cannot stream exactly; it is decoded in overlapping windows instead.
  Audio of frames ``[a, b)`` is emitted once frames up to ``b + context`` exist, from a
  decode of frames ``[a - context, b + context)``, and the window's middle is kept. With
  ``context`` at least the decoder's receptive field (in frames) this equals the offline
  decode up to float rounding; the price is ``context`` frames of latency and each frame
  decoded about ``1 + 2 context / chunk`` times. :func:`stream_difference` measures it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack

import numpy as np
import torch

__all__ = ["AudioStreamer", "stream_difference"]


class AudioStreamer:
    """Codes of one sequence in, in order; its audio out to ``sink`` chunk by chunk.

    Args:
        codec: the :class:`~lit_codec.codec.Codec` the codes come from.
        sink: called with each ``(samples,)`` float32 chunk, in order.
        chunk_frames: the least number of new frames decoded at once (non-causal codecs;
            a causal codec decodes every push).
        context: frames of left and right context of a non-causal codec's windows; None:
            16 frames (the shipped codec: within 1.1e-7 of offline; 8 frames: 2.2e-4).
    """

    def __init__(
        self,
        codec,
        sink: Callable[[np.ndarray], None],
        chunk_frames: int = 10,
        context: int | None = None,
    ):
        self.codec = codec
        self.sink = sink
        self.chunk_frames = max(1, int(chunk_frames))
        self.context = 16 if context is None else int(context)
        self.causal = False  # known on entering: whether the codec accepts streaming
        self.hop = codec.hop_length
        self._codes: list[torch.Tensor] = []  # (m, n_q) pieces
        self._frames = 0  # frames received
        self._emitted = 0  # frames whose audio went to the sink
        self._stack = ExitStack()
        self._stream = None
        self.first_audio_at: float | None = None  # time.perf_counter() of the first chunk
        self.samples = 0

    def __enter__(self) -> AudioStreamer:
        try:
            self._stream = self._stack.enter_context(self.codec.streaming())
            self.causal = True
        except ValueError:  # a codec that looks ahead refuses to stream: windows instead
            self._stack.close()
            self._stack = ExitStack()
        return self

    def __exit__(self, *exc) -> None:
        self._stack.close()

    def _emit(self, audio: torch.Tensor) -> None:
        chunk = audio.reshape(-1).float().cpu().numpy()
        if chunk.size == 0:
            return
        if self.first_audio_at is None:
            self.first_audio_at = time.perf_counter()
        self.samples += chunk.size
        self.sink(chunk)

    def push(self, codes: torch.Tensor) -> None:
        """The next ``(frames, n_q)`` codes of the sequence (local code values)."""
        if codes.shape[0] == 0:
            return
        codes = codes.detach().to(torch.long).cpu()
        self._frames += codes.shape[0]
        if self.causal:
            with torch.inference_mode():
                self._emit(self._stream.decode(codes.T[None]))  # (1, n_q, m) -> (1, 1, m * hop)
            self._emitted = self._frames
            return
        self._codes.append(codes)
        ready = self._frames - self.context  # frames whose right context exists
        if ready - self._emitted >= self.chunk_frames:
            self._decode_until(ready)

    def finish(self) -> None:
        """The sequence ended: decode what is left (no right context is coming)."""
        if not self.causal and self._emitted < self._frames:
            self._decode_until(self._frames)

    def _decode_until(self, stop: int) -> None:
        """Emit the audio of frames ``[emitted, stop)`` from a window with context."""
        codes = torch.cat(self._codes) if len(self._codes) > 1 else self._codes[0]
        self._codes = [codes]
        first = max(0, self._emitted - self.context)
        last = min(self._frames, stop + self.context)
        with torch.inference_mode():
            window = codes[first:last].T[None].to(self.codec._device())  # (1, n_q, w)
            audio = self.codec.decode(window)[0, 0]  # (w * hop,)
        a = (self._emitted - first) * self.hop
        self._emit(audio[a : a + (stop - self._emitted) * self.hop])
        self._emitted = stop


def stream_difference(
    codec, codes: torch.Tensor, chunk_frames: int = 10, context: int | None = None
) -> float:
    """Largest absolute difference between :class:`AudioStreamer`'s audio (frames pushed one
    at a time) and the offline decode of ``codes`` ``(frames, n_q)``."""
    pieces: list[np.ndarray] = []
    with AudioStreamer(codec, pieces.append, chunk_frames, context) as streamer:
        for f in range(codes.shape[0]):
            streamer.push(codes[f : f + 1])
        streamer.finish()
    streamed = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    with torch.inference_mode():
        offline = codec.decode(codes.T[None].long())[0, 0].float().cpu().numpy()
    if streamed.shape != offline.shape:
        raise AssertionError(f"streamed {streamed.shape} samples, offline {offline.shape}")
    return float(np.abs(streamed - offline).max()) if offline.size else 0.0
