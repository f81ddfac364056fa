"""``lit-codec encode``: audio file -> codes (.npz), offline or streamed in chunks."""

from __future__ import annotations

import argparse
from pathlib import Path

from lit_codec.commands.common import (
    CKPT_HELP,
    DEFAULT_CODEC,
    DENOISE_HELP,
    add_threads_argument,
    run_guarded,
    set_threads,
)

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The options of ``lit-codec encode``."""
    enc = argparse.ArgumentParser(prog="lit-codec encode", description="audio file -> codes (.npz)")
    enc.add_argument("--ckpt", default=DEFAULT_CODEC, help=CKPT_HELP)
    enc.add_argument(
        "--input", required=True, help="audio file (any format, rate and channel count)"
    )
    enc.add_argument("--output", required=True, help=".npz file to write")
    rate = enc.add_mutually_exclusive_group()
    rate.add_argument(
        "--kbps", type=float, default=None, help="target bitrate (the largest n_q within it)"
    )
    rate.add_argument("--n-q", type=int, default=None, help="number of codebooks")
    enc.add_argument(
        "--chunk-ms",
        type=float,
        default=None,
        help="encode through the streaming path in chunks of this size",
    )
    enc.add_argument("--denoise", action="store_true", help=DENOISE_HELP)
    enc.add_argument("--device", default="cpu")
    add_threads_argument(enc)
    return enc


def run(a: argparse.Namespace) -> None:
    """Encode ``a.input`` into ``a.output``."""
    import numpy as np
    import torch

    from lit_codec.codec import Codec, load_audio

    set_threads(a.threads)
    codec = Codec.from_checkpoint(a.ckpt, map_location=a.device)
    wav = load_audio(a.input, codec.sample_rate)
    n_q = codec.resolve_n_q(a.n_q, a.kbps)
    if a.chunk_ms:
        chunk = max(1, int(round(a.chunk_ms * codec.sample_rate / 1000)))
        parts = []
        with codec.streaming(n_q=n_q, denoise=a.denoise) as stream:
            for start in range(0, len(wav), chunk):
                parts.append(stream.encode(wav[start : start + chunk]))
            parts.append(stream.flush())
        codes = torch.cat(parts, dim=-1)[0]  # (n_q, frames)
    else:
        codes = codec.encode(wav, n_q=n_q, denoise=a.denoise)[0]  # (n_q, frames)
    dtype = np.int16 if codec.codebook_size <= 32768 else np.int32
    out = Path(a.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        codes=codes.cpu().numpy().astype(dtype),
        sample_rate=np.int64(codec.sample_rate),
        frame_rate=np.float64(codec.frame_rate),
        hop_length=np.int64(codec.hop_length),
        n_q=np.int64(n_q),
        codebook_size=np.int64(codec.codebook_size),
        num_samples=np.int64(len(wav)),
        kbps=np.float64(codec.quantizer.kbps(n_q)),
        fingerprint=np.str_(codec.fingerprint),
        denoised=np.bool_(a.denoise),  # the codes are of the clean estimate
    )
    print(
        f"encoded {a.input} ({len(wav) / codec.sample_rate:.2f} s) -> {out}: {codes.shape[1]} frames x {n_q} codebooks, "
        f"{codec.quantizer.kbps(n_q):g} kbps"
        + (f", streamed in {a.chunk_ms:g} ms chunks" if a.chunk_ms else "")
        + (", denoised" if a.denoise else "")
    )




def main(argv: list[str]) -> None:
    """``lit-codec encode ARGS``."""
    run_guarded("encode", run, parser().parse_args(argv))
