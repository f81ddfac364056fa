"""``lit-codec decode``: codes (.npz written by ``encode``) -> audio file."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from lit_codec.commands.common import (
    CKPT_HELP,
    DEFAULT_CODEC,
    DENOISE_HELP,
    add_threads_argument,
    run_guarded,
    set_threads,
)

__all__ = ["CODES_KEYS", "main", "parser", "read_codes"]


def parser() -> argparse.ArgumentParser:
    """The options of ``lit-codec decode``."""
    dec = argparse.ArgumentParser(prog="lit-codec decode", description="codes (.npz) -> audio file")
    dec.add_argument("--ckpt", default=DEFAULT_CODEC, help=CKPT_HELP)
    dec.add_argument("--input", required=True, help=".npz written by `lit-codec encode`")
    dec.add_argument(
        "--output", required=True, help="audio file to write (format from the extension)"
    )
    dec.add_argument(
        "--chunk-ms", type=float, default=None, help="decode through the streaming path"
    )
    dec.add_argument("--denoise", action="store_true", help=DENOISE_HELP)
    dec.add_argument("--device", default="cpu")
    add_threads_argument(dec)
    return dec


def run(a: argparse.Namespace) -> None:
    """Decode ``a.input`` into ``a.output``."""
    import numpy as np
    import soundfile as sf
    import torch

    from lit_codec.codec import Codec

    set_threads(a.threads)
    out = Path(a.output)
    if out.suffix.lstrip(".").upper() not in sf.available_formats():
        raise ValueError(
            f"--output {out}: the extension names no audio format soundfile writes "
            "(use .wav, .flac, .ogg, ...)"
        )
    codes, fingerprint, num_samples = read_codes(a.input)
    codec = Codec.from_checkpoint(a.ckpt, map_location=a.device)
    if fingerprint != codec.fingerprint:
        raise ValueError(
            f"{a.input} was encoded by codec {fingerprint}, but {a.ckpt} is codec "
            f"{codec.fingerprint}; decode it with the checkpoint that encoded it"
        )
    codes_t = torch.from_numpy(codes.astype(np.int64))[None]  # (1, n_q, F)
    if a.chunk_ms:
        frames = max(1, int(round(a.chunk_ms * codec.frame_rate / 1000)))
        with codec.streaming(n_q=codes_t.shape[1], denoise=a.denoise) as stream:
            audio = torch.cat(
                [
                    stream.decode(codes_t[..., i : i + frames])
                    for i in range(0, codes_t.shape[-1], frames)
                ],
                -1,
            )
    else:
        audio = codec.decode(codes_t, denoise=a.denoise)
    audio = audio[0, 0, :num_samples].cpu().numpy()
    out.parent.mkdir(parents=True, exist_ok=True)
    sf.write(out, np.clip(audio, -1, 1), codec.sample_rate)
    print(
        f"decoded {a.input} -> {out}: {len(audio) / codec.sample_rate:.2f} s at {codec.sample_rate} Hz"
    )


CODES_KEYS = ("codes", "fingerprint", "num_samples")  # what decoding needs of an .npz


def read_codes(path: str) -> tuple[Any, str, int]:
    """``(codes (n_q, frames), fingerprint, num_samples)`` of an .npz written by ``encode``;
    a ``ValueError`` that names the file, what it looks like and what was expected otherwise
    (never by unpickling: NumPy object arrays are refused)."""
    import numpy as np

    from lit_codec.sniff import KINDS, file_kind

    expected = "expected an .npz written by `lit-codec encode`"
    kind = file_kind(path)
    if kind == "missing":
        raise FileNotFoundError(f"{path} does not exist ({expected})")
    if kind != "npz":
        raise ValueError(f"{path} looks like {KINDS[kind]}, not codes: {expected}")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in CODES_KEYS if k in data.files}
    except Exception:  # object arrays (NumPy would unpickle them), damaged members
        raise ValueError(
            f"{path} is a NumPy .npz archive whose arrays cannot be read as codes "
            f"(lit-codec writes plain arrays and never unpickles): {expected}"
        ) from None
    missing = [k for k in CODES_KEYS if k not in arrays]
    if missing:
        raise ValueError(
            f"{path} is a NumPy .npz archive without {', '.join(missing)}, not codes: {expected}"
        )
    codes, fingerprint = arrays["codes"], str(arrays["fingerprint"])
    num_samples = int(arrays["num_samples"])
    if codes.ndim != 2 or codes.dtype.kind not in "iu":
        raise ValueError(
            f"{path}: 'codes' is a {codes.dtype} array of shape {codes.shape}, not "
            f"(codebooks, frames) integers: {expected}"
        )
    return codes, fingerprint, num_samples




def main(argv: list[str]) -> None:
    """``lit-codec decode ARGS``."""
    run_guarded("decode", run, parser().parse_args(argv))
