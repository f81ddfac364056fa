"""AudioStreamer: codes pushed frame by frame decode to the offline audio, causal or not."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lit_codec.lm.audio_stream import AudioStreamer, stream_difference

from ..tiny_codecs import tiny_convnext_codec, tiny_seanet_codec


def codes_of(codec, frames: int = 37, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, codec.codebook_size, (frames, codec.n_q), generator=g)  # (F, n_q)


@pytest.mark.parametrize("make", [lambda: tiny_convnext_codec(causal=True), tiny_seanet_codec])
def test_a_causal_codec_streams_exactly_with_one_frame_of_latency(make):
    codec = make().eval()
    chunks: list[np.ndarray] = []
    codes = codes_of(codec)
    with AudioStreamer(codec, chunks.append) as streamer:
        assert streamer.causal
        streamer.push(codes[:1])
        assert sum(c.size for c in chunks) == codec.hop_length  # audio after the first frame
        streamer.push(codes[1:])
        streamer.finish()
    assert stream_difference(codec, codes) < 1e-5


def test_a_non_causal_codec_streams_in_windows_equal_to_offline_with_enough_context():
    codec = tiny_convnext_codec(causal=False).eval()
    codes = codes_of(codec, frames=60)
    chunks: list[np.ndarray] = []
    with AudioStreamer(codec, chunks.append, chunk_frames=5, context=16) as streamer:
        assert not streamer.causal
        for f in range(30):
            streamer.push(codes[f : f + 1])
        heard = sum(c.size for c in chunks)
        assert 0 < heard <= (30 - 16) * codec.hop_length  # audio before the end, context held back
        streamer.push(codes[30:])
        streamer.finish()
    assert sum(c.size for c in chunks) == 60 * codec.hop_length
    assert stream_difference(codec, codes, chunk_frames=5, context=16) < 1e-5
    assert (
        stream_difference(codec, codes, chunk_frames=5, context=0) > 1e-3
    )  # no context: not offline
