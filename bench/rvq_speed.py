"""Residual VQ speed: lit-codec's ResidualVectorQuantizer vs vector-quantize-pytorch's ResidualVQ.

Both quantize a batch of 16 x 750 frames (10 s at 75 frames/s) of 128-dim latents with 8
codebooks of 1024 codes, in training mode, so every call also updates the EMA codebooks.
Settings made as equal as the two libraries allow:

- EMA codebooks, decay 0.99, Laplace smoothing 1e-5, k-means init (10 iterations, done in
  the untimed warm-up), dead-code re-seeding below an EMA cluster size of 2;
- no quantizer dropout (all 8 layers run every call);
- straight-through gradient, commitment loss weight 1 (vector-quantize-pytorch's default
  rotation trick is turned off, lit-codec has none);
- each gets its own natural layout: vector-quantize-pytorch (B, T, D), lit-codec (B, D, T).

Two comparisons, each on one thread, after warm-up calls, median of timed repeats with the
two implementations interleaved: forward, and forward + backward of ``mean(q^2) + commit``.

Run: ``OMP_NUM_THREADS=1 python bench/rvq_speed.py [--repeats 7]``. Each comparison ends with
``ratio: X`` where X > 1 means lit-codec is faster.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from vector_quantize_pytorch import ResidualVQ

from lit_codec.nn.quantization import ResidualVectorQuantizer

BATCH, FRAMES, DIM, N_Q, CODES = 16, 750, 128, 8, 1024


def build() -> tuple[ResidualVectorQuantizer, ResidualVQ]:
    ours = ResidualVectorQuantizer(
        dim=DIM,
        n_q=N_Q,
        codebook_size=CODES,
        decay=0.99,
        epsilon=1e-5,
        kmeans_init=True,
        kmeans_iters=10,
        threshold_ema_dead_code=2.0,
        quantizer_dropout="none",
    )
    peer = ResidualVQ(
        dim=DIM,
        num_quantizers=N_Q,
        codebook_size=CODES,
        decay=0.99,
        eps=1e-5,
        kmeans_init=True,
        kmeans_iters=10,
        threshold_ema_dead_code=2,
        quantize_dropout=False,
        rotation_trick=False,
        commitment_weight=1.0,
    )
    return ours.train(), peer.train()


def steps(
    ours: ResidualVectorQuantizer, peer: ResidualVQ, x_btd: torch.Tensor
) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    x_bdt = x_btd.transpose(1, 2).contiguous()  # (B, D, T)

    def ours_forward() -> None:
        ours(x_bdt)

    def peer_forward() -> None:
        peer(x_btd)

    def ours_backward() -> None:
        x = x_bdt.detach().requires_grad_()
        out = ours(x)
        (out.quantized.square().mean() + out.losses["vq/commit"]).backward()

    def peer_backward() -> None:
        x = x_btd.detach().requires_grad_()
        quantized, _, commit = peer(x)
        (quantized.square().mean() + commit.sum()).backward()

    return {
        "forward (train mode)": (ours_forward, peer_forward),
        "forward + backward": (ours_backward, peer_backward),
    }


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=7, help="timed repeats per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    ours, peer = build()
    x = torch.randn(BATCH, FRAMES, DIM)  # (B, T, D)
    print(
        f"RVQ {N_Q} x {CODES} codes, dim {DIM}, input {BATCH} x {FRAMES} frames, training mode, "
        f"{torch.get_num_threads()} thread"
    )
    for name, (ours_fn, peer_fn) in steps(ours, peer, x).items():
        for _ in range(args.warmup):  # the first call k-means-initialises both
            ours_fn()
            peer_fn()
        ours_times, peer_times = [], []
        for _ in range(args.repeats):
            ours_times.append(timed(ours_fn))
            peer_times.append(timed(peer_fn))
        ours_ms = 1000 * statistics.median(ours_times)
        peer_ms = 1000 * statistics.median(peer_times)
        print(f"{name}:")
        print(f"  lit-codec ResidualVectorQuantizer:     {ours_ms:8.1f} ms")
        print(f"  vector-quantize-pytorch ResidualVQ:    {peer_ms:8.1f} ms")
        print(f"ratio: {peer_ms / ours_ms:.2f}")


if __name__ == "__main__":
    main()
