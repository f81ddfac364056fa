"""FSQ speed and correctness: lit-codec's FiniteScalarQuantizer / ResidualFSQ vs
vector-quantize-pytorch's FSQ / ResidualFSQ.

Both quantize a batch of 16 x 750 frames (10 s at 75 frames/s) of 128-dim latents with the
levels (8, 5, 5, 5) (1000 codes per codebook), projected to 4 channels and back by linear
layers with bias; the residual quantizers run 8 stages. Settings made as equal as the two
libraries allow:

- the same input tensor; each gets its natural layout: vector-quantize-pytorch (B, T, D),
  lit-codec (B, D, T) as a transposed view of the same memory (what SEANet produces);
- no quantizer dropout (all 8 stages run every call);
- "forward + backward": a training-mode forward and the backward of ``mean(q^2)``, each
  reading ``q`` in its memory layout;
  "encode": codes only, in eval mode without gradients (vector-quantize-pytorch has no
  codes-only call, so its eval forward, which also projects back, is timed).

Correctness, printed first: with the projection weights copied from ours, vector-quantize-
pytorch's FSQ must give the same codes and outputs (both follow the paper's bound). The
residual quantizers bound differently (vector-quantize-pytorch soft-clamps the input and
uses a symmetric grid with a hard clamp per stage), so their codes differ; what is compared
is the quantization error after 1, 2, 4 and 8 stages, relative to the continuous value
each one quantizes (4 channels, no projections, unit-variance latents).

Run: ``OMP_NUM_THREADS=1 python bench/fsq_speed.py [--rounds 7]``. Each timing ends with
``ratio: X`` where X > 1 means lit-codec is faster.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import _common  # noqa: F401  (one thread, before torch)
import torch
from _common import compare, one_thread, print_ratio

from lit_codec.nn.fsq import FiniteScalarQuantizer, ResidualFSQ

try:
    from vector_quantize_pytorch import FSQ as PeerFSQ
    from vector_quantize_pytorch import ResidualFSQ as PeerResidualFSQ
except ImportError:  # the peer is an optional dependency (the `bench` extra)
    raise SystemExit(
        "bench/fsq_speed.py compares with vector-quantize-pytorch: "
        "pip install -e '.[bench]' (or `make bench`)"
    ) from None

BATCH, FRAMES, DIM, N_Q = 16, 750, 128, 8
LEVELS = (8, 5, 5, 5)


def matched(ours: torch.nn.Module, peer: torch.nn.Module) -> None:
    """Give the peer our projection weights."""
    peer.project_in.load_state_dict(ours.project_in.state_dict())
    peer.project_out.load_state_dict(ours.project_out.state_dict())


def check_fsq(x_btd: torch.Tensor) -> None:
    ours = FiniteScalarQuantizer(dim=DIM, levels=LEVELS).eval()
    peer = PeerFSQ(levels=list(LEVELS), dim=DIM).eval()
    matched(ours, peer)
    with torch.no_grad():
        q_peer, idx_peer = peer(x_btd)  # (B, T, D), (B, T)
        out = ours(x_btd.transpose(1, 2))
    same = (out.codes[:, 0] == idx_peer.long()).float().mean()
    diff = (out.quantized.transpose(1, 2) - q_peer).abs().max()
    print(
        f"FSQ correctness: identical codes {100 * float(same):.2f}% of "
        f"{idx_peer.numel()} frames, max |quantized difference| {float(diff):.2e}"
    )


def check_residual() -> None:
    """Relative RMS quantization error after n stages, each against its own continuous value."""
    g = torch.Generator().manual_seed(1)
    x = torch.randn(BATCH, FRAMES, len(LEVELS), generator=g)  # (B, T, d)
    levels = torch.tensor(LEVELS, dtype=torch.float32)
    soft_clamp = 1 + 1 / (levels - 1)  # vector-quantize-pytorch's input soft clamp
    peer_target = (x / soft_clamp).tanh() * soft_clamp  # (B, T, d)
    ours = ResidualFSQ(dim=len(LEVELS), levels=LEVELS, n_q=N_Q, quantizer_dropout="none").eval()
    ours_target = ours.bounded(x.transpose(1, 2))  # (B, d, T)
    print("ResidualFSQ quantization error (RMS error / RMS of the value quantized):")
    for n in (1, 2, 4, 8):
        peer = PeerResidualFSQ(levels=list(LEVELS), num_quantizers=n, dim=len(LEVELS)).eval()
        with torch.no_grad():
            q_peer, _ = peer(x)  # (B, T, d)
        q_ours = ours.decode(ours.encode(x.transpose(1, 2), n))  # (B, d, T)
        e_ours = (q_ours - ours_target).square().mean().sqrt() / ours_target.square().mean().sqrt()
        e_peer = (q_peer - peer_target).square().mean().sqrt() / peer_target.square().mean().sqrt()
        print(
            f"  {n} stage(s): lit-codec {float(e_ours):.2e}, vector-quantize-pytorch {float(e_peer):.2e}"
        )


def cases(x_btd: torch.Tensor) -> dict[str, tuple[Callable[[], None], Callable[[], None]]]:
    x_bdt = x_btd.transpose(1, 2)  # (B, D, T) view of the same memory
    ours_fsq = FiniteScalarQuantizer(dim=DIM, levels=LEVELS)
    peer_fsq = PeerFSQ(levels=list(LEVELS), dim=DIM)
    ours_res = ResidualFSQ(dim=DIM, levels=LEVELS, n_q=N_Q, quantizer_dropout="none")
    peer_res = PeerResidualFSQ(levels=list(LEVELS), num_quantizers=N_Q, dim=DIM)
    matched(ours_fsq, peer_fsq)
    matched(ours_res, peer_res)

    def ours_backward(module: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            module.train()
            x = x_bdt.detach().requires_grad_()
            # The loss reads the output in its memory layout, (B, T, D), as SEANet's decoder
            # does; summing over the (B, D, T) view would make autograd build channel-major
            # gradients and copy them back (the same for any time-major tensor).
            module(x).quantized.transpose(1, 2).square().mean().backward()

        return run

    def peer_backward(module: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            module.train()
            x = x_btd.detach().requires_grad_()
            module(x)[0].square().mean().backward()

        return run

    def ours_encode(module: ResidualFSQ) -> Callable[[], None]:
        def run() -> None:
            module.eval()
            module.encode(x_bdt)

        return run

    def peer_encode(module: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            module.eval()
            with torch.no_grad():
                module(x_btd)

        return run

    return {
        "FSQ forward + backward": (ours_backward(ours_fsq), peer_backward(peer_fsq)),
        "FSQ encode": (ours_encode(ours_fsq), peer_encode(peer_fsq)),
        f"ResidualFSQ ({N_Q} stages) forward + backward": (
            ours_backward(ours_res),
            peer_backward(peer_res),
        ),
        f"ResidualFSQ ({N_Q} stages) encode": (ours_encode(ours_res), peer_encode(peer_res)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timed rounds per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls before timing")
    args = parser.parse_args()

    one_thread()
    torch.manual_seed(0)
    x = torch.randn(BATCH, FRAMES, DIM)  # (B, T, D)
    print(
        f"FSQ levels {LEVELS} ({torch.tensor(LEVELS).prod()} codes), dim {DIM}, input {BATCH} x "
        f"{FRAMES} frames, {torch.get_num_threads()} thread"
    )
    check_fsq(3 * x)
    check_residual()
    for name, (ours_fn, peer_fn) in cases(x).items():
        times = compare({"ours": ours_fn, "peer": peer_fn}, rounds=args.rounds, warmup=args.warmup)
        ours_ms, peer_ms = 1000 * times["ours"], 1000 * times["peer"]
        print(f"{name}:")
        print(f"  lit-codec:               {ours_ms:8.2f} ms")
        print(f"  vector-quantize-pytorch: {peer_ms:8.2f} ms")
        print_ratio(peer_ms / ours_ms)


if __name__ == "__main__":
    main()
