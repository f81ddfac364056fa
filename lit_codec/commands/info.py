"""``lit-codec info``: describe a checkpoint, an export or a shipped codec."""

from __future__ import annotations

import argparse

from lit_codec.commands.common import CKPT_HELP, DEFAULT_CODEC, run_guarded

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The options of ``lit-codec info``."""
    info = argparse.ArgumentParser(
        prog="lit-codec info", description="describe a codec checkpoint or a shipped codec"
    )
    info.add_argument("name", nargs="?", default=None, metavar="CKPT",
                      help=f"as --ckpt (e.g. `lit-codec info {DEFAULT_CODEC}`)")  # fmt: skip
    info.add_argument("--ckpt", default=None, help=CKPT_HELP)
    info.add_argument("--device", default="cpu")
    return info


def run(a: argparse.Namespace) -> None:
    """Print what ``a.name`` / ``a.ckpt`` is."""
    from lit_codec.codec import Codec
    from lit_codec.pretrained import card, is_pretrained_name

    if a.name is not None and a.ckpt is not None:
        raise ValueError(f"give the codec once: `info {a.name}` or `info --ckpt {a.ckpt}`")
    a.ckpt = a.name or a.ckpt or DEFAULT_CODEC
    codec = Codec.from_checkpoint(a.ckpt, map_location=a.device)
    if is_pretrained_name(a.ckpt):
        print_card(a.ckpt, card(a.ckpt))
    n_params = sum(p.numel() for p in codec.parameters())
    rates = ", ".join(f"{k:g}" for k in codec.bitrates())
    print(
        f"codec {codec.fingerprint}: {codec.sample_rate} Hz, hop {codec.hop_length} -> {codec.frame_rate:g} frames/s, "
        f"{codec.n_q} x {codec.codebook_size} codes; bitrates (kbps): {rates}; {n_params / 1e6:.2f} M parameters"
        + (
            f"; denoises on request (`lit-codec {codec.denoises_at} --denoise`)"
            if codec.denoises_at
            else ""
        )
    )


def print_card(name: str, info: dict) -> None:
    """The model card of a shipped codec: what it is, how it was trained, what it reached."""
    print(f"{name}: {info.get('description', 'shipped codec')}")
    for key, label in (("training", "trained"), ("weights", "stored"), ("report", "report")):
        if key in info:
            print(f"  {label}: {info[key]}")
    for row in info.get("results", []):
        print(f"  {row}")




def main(argv: list[str]) -> None:
    """``lit-codec info ARGS``."""
    run_guarded("info", run, parser().parse_args(argv))
