"""Time to first audio of ``lit-codec generate --stream`` against generating, then decoding.

A multi-scale :class:`lit_codec.nn.MultiScaleLM` with random weights (global ``--width`` x
``--depth``, local ``--width / 2`` x 2) built for the shipped ``speech16k`` codec's
vocabulary (12 codebooks x 1024, 50 frames/s) generates ``--frames`` frames after a
``--prefix``-frame enhancement prefix, one thread, and the frames become audio through the
shipped codec two ways:

- ``offline`` (the peer: what UniAudio and ``generate`` without ``--stream`` do): generate
  every frame, then decode the whole target; the first sample exists when both are done;
- ``stream``: :class:`lit_codec.lm.audio_stream.AudioStreamer` fed by ``generate``'s
  ``on_frames``: the shipped codec looks ahead, so it decodes overlapping windows of 16
  frames of context; the first chunk exists once ``chunk + context`` frames are generated.

Printed: seconds to the first audio sample of each, total seconds of each (streaming
decodes some frames more than once), the streamed audio's largest difference from the
offline decode, and ``ratio:`` offline over streaming time to first audio.

Run: ``OMP_NUM_THREADS=1 python bench/lm_stream.py [--frames 250] [--width 256 --depth 4]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (one thread, before torch)
import numpy as np
import torch
from _common import one_thread, print_ratio

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from lit_codec.codec import Codec  # noqa: E402
from lit_codec.lm import build_sequence, load_templates, vocabulary_for  # noqa: E402
from lit_codec.lm.audio_stream import AudioStreamer  # noqa: E402
from lit_codec.lm.generate import GenerationConfig, Prefix, generate  # noqa: E402
from lit_codec.lm.vocab import CodecInfo  # noqa: E402
from lit_codec.nn import MultiScaleLM, TransformerConfig  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--prefix", type=int, default=250, help="noisy frames in the prefix")
    p.add_argument("--frames", type=int, default=250, help="frames generated")
    p.add_argument("--chunk", type=int, default=10, help="frames decoded at once when streaming")
    a = p.parse_args()
    one_thread()
    codec = Codec.from_checkpoint("speech16k")
    templates = load_templates()
    vocab = vocabulary_for({"se": templates["se"]}, CodecInfo.from_codec(codec))
    torch.manual_seed(0)
    network = MultiScaleLM.from_vocabulary(
        vocab,
        global_config=TransformerConfig(width=a.width, depth=a.depth, heads=max(1, a.width // 64)),
        local_config=TransformerConfig(width=a.width // 2, depth=2, heads=max(1, a.width // 128)),
    ).eval()
    n_q = vocab.codec.n_q
    noisy = torch.randint(
        0, 1024, (a.prefix, n_q), generator=torch.Generator().manual_seed(0)
    ).numpy()
    seq = build_sequence(vocab, templates["se"], {"noisy_codes": noisy, "codes": noisy[:0]})
    prefix = Prefix.from_sequences([seq], vocab)
    config = GenerationConfig(max_frames=a.frames, min_frames=a.frames, seed=0)
    params = sum(q.numel() for q in network.parameters()) / 1e6
    print(f"multi-scale LM {params:.2f} M parameters (global {a.width} x {a.depth}); shipped speech16k "
          f"codec; {a.prefix}-frame prefix, {a.frames} frames generated; one thread")  # fmt: skip
    generate(network, vocab, prefix, GenerationConfig(max_frames=4, min_frames=4))  # warm-up

    def offline() -> tuple[float, float, np.ndarray]:
        start = time.perf_counter()
        result = generate(network, vocab, prefix, config)
        with torch.inference_mode():
            audio = codec.decode(result.codes[0].T[None])[0, 0].numpy()
        t = time.perf_counter() - start
        return t, t, audio

    def stream() -> tuple[float, float, np.ndarray]:
        pieces: list[np.ndarray] = []
        start = time.perf_counter()
        with AudioStreamer(codec, pieces.append, a.chunk) as streamer:

            def on_frames(chunk) -> None:
                streamer.push(chunk.codes)
                if chunk.ended:
                    streamer.finish()

            generate(network, vocab, prefix, config, on_frames=on_frames)
        total = time.perf_counter() - start
        return streamer.first_audio_at - start, total, np.concatenate(pieces)

    rounds = {"offline": [], "stream": []}
    audio = {}
    for _ in range(2):  # alternating rounds
        for name, fn in (("offline", offline), ("stream", stream)):
            first, total, audio[name] = fn()
            rounds[name].append((first, total))
    for name, values in rounds.items():
        first, total = (float(np.median(v)) for v in zip(*values))
        print(f"{name:8s}: first audio after {first:6.2f} s, done after {total:6.2f} s")
    print(
        f"streamed audio vs offline decode: max |difference| {np.abs(audio['stream'] - audio['offline']).max():.2e}"
    )
    first_offline = float(np.median([r[0] for r in rounds["offline"]]))
    first_stream = float(np.median([r[0] for r in rounds["stream"]]))
    print_ratio(first_offline / first_stream)


if __name__ == "__main__":
    main()
