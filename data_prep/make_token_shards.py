#!/usr/bin/env python
"""Turn audio shards into token shards for the codec language model.

Reads (``--input``): an audio-shard directory written by make_audio_shards.py
  (index.json + {split}-NNNNNN.tar of {key}.flac + {key}.json with speaker,
  text, language when known), at the codec's sample rate.

Writes into ``--output DIR``, per split of the input:
  {split}-{NNNNNN}.tar   WebDataset shards of at most --shard-max-samples samples:
                         {key}.codes.npy (int16, (frames, n_q)), one .npy per field
                         the sample's tasks read (noisy_codes, mixture_codes,
                         reverberant_codes, prompt_codes, masked_codes, phones,
                         semantic, midi, text) and {key}.json (key, speaker,
                         language, text, duration, frames, tasks, what was drawn)
  index.json             the vocabulary schema and its hash, splits, shards, counts
  report.json            every sample (or task of a sample) left out, with the cause
  .progress/             ledgers that make an interrupted run resumable

Tasks (--tasks, from recipes/lm/tasks.yaml): se (noise: --noise DIR of recordings
or audio shards, else white/pink/babble at --snr dB), tse (another speaker at
--sir dB + a 3 s prompt of the target speaker), dereverb (synthetic rooms of
--rt60 seconds), tts / instruct_tts / speech_edit (phones through espeak-ng:
pip install phonemizer espeakng-loader), svs (phones + the MIDI file the
metadata's "midi" names), vc (semantic units: --kmeans), tta / ttm (the caption).
Every draw is seeded by --seed and the sample key.

Re-running the same command after an interruption resumes: finished shards are
kept, the rest are written, byte-identical to an uninterrupted run, whatever
--workers. Bad samples never stop the run; exit status 2 for what would spoil
every sample (a codec at another sample rate than the shards, an unknown task),
1 with --strict when something was left out, else 0.

Example:
  python data_prep/make_token_shards.py --input data/speech_16k --codec speech16k \\
      --tasks se,tse,dereverb,tts --output data/speech_16k_tokens --workers 8
"""

from __future__ import annotations

import argparse
import sys

from lit_codec.data.pairs import NOISE_KINDS, PairSettings
from lit_codec.data.token_shards import TokenShardSettings, make_token_shards


def _range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. 0,20), got {text!r}") from None
    return low, high


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def build_parser() -> argparse.ArgumentParser:
    d, p_ = TokenShardSettings("", ""), PairSettings()
    p = argparse.ArgumentParser(
        prog="make_token_shards.py",
        description=__doc__.split("\n\n")[0],
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    io = p.add_argument_group("input and output")
    io.add_argument("--input", "-i", required=True, metavar="DIR", help="audio-shard directory")
    io.add_argument("--output", "-o", required=True, metavar="DIR", help="token-shard directory")
    io.add_argument(
        "--codec", default=d.codec, help="codec checkpoint (.ckpt), export (.safetensors) or name"
    )
    io.add_argument(
        "--tasks", type=_names, default=d.tasks, help="comma-separated tasks, e.g. se,tse,tts"
    )
    io.add_argument("--templates", default=None, help="tasks YAML (default recipes/lm/tasks.yaml)")
    io.add_argument(
        "--vocabulary",
        default=None,
        metavar="CKPT_OR_JSON",
        help="grow this vocabulary (a CodecLM checkpoint, vocabulary JSON or token-shard dir) "
        "instead of building one: for fine-tuning a trained LM to new tasks (no id moves)",
    )
    io.add_argument("--overwrite", action="store_true", help="replace an earlier, different run")
    pairs = p.add_argument_group("pairs")
    pairs.add_argument("--seed", type=int, default=p_.seed, help="seed of every draw")
    pairs.add_argument(
        "--noise", default=None, metavar="DIR", help="noise recordings (folder or shards)"
    )
    pairs.add_argument(
        "--noise-kinds", type=_names, default=p_.noise_kinds,
        help=f"built-in noises without --noise (of {','.join(NOISE_KINDS)})",
    )  # fmt: skip
    pairs.add_argument("--snr", type=_range, default=p_.snr, metavar="LOW,HIGH", help="SNR dB (se)")
    pairs.add_argument(
        "--sir", type=_range, default=p_.sir, metavar="LOW,HIGH", help="SIR dB (tse)"
    )
    pairs.add_argument("--rt60", type=_range, default=p_.rt60, metavar="LOW,HIGH", help="RT60 s")
    pairs.add_argument("--drr", type=_range, default=p_.drr, metavar="LOW,HIGH", help="DRR dB")
    pairs.add_argument(
        "--prompt-seconds", type=float, default=p_.prompt_seconds, help="same-speaker prompt length"
    )
    pairs.add_argument(
        "--mask-fraction", type=_range, default=p_.mask_fraction, metavar="LOW,HIGH",
        help="share of frames masked (speech_edit)",
    )  # fmt: skip
    tok = p.add_argument_group("tokenizers")
    tok.add_argument("--language", default=None, help="language of samples whose metadata has none")
    tok.add_argument("--kmeans", default=None, help="k-means .safetensors of semantic units (vc)")
    tok.add_argument("--bpe", default=None, help="sentencepiece model for text (default: bytes)")
    tok.add_argument("--n-q", type=int, default=None, help="codebooks to keep (default: all)")
    run = p.add_argument_group("running")
    run.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: all cores; 1 on GPU)"
    )
    run.add_argument("--threads", type=int, default=d.threads, help="torch threads per worker")
    run.add_argument("--device", default=d.device, help="where the codec runs (cpu, cuda)")
    run.add_argument(
        "--max-batch-seconds",
        type=float,
        default=None,
        help="padded audio per codec call (default: 8 on a CPU, 64 on a GPU)",
    )
    run.add_argument(
        "--shard-max-samples", type=int, default=d.shard_max_samples, help="samples per shard"
    )
    run.add_argument(
        "--max-shards", type=int, default=None, help="stop after writing this many shards"
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--strict", action="store_true", help="exit 1 if anything was left out")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        pairs = PairSettings(
            seed=args.seed, snr=args.snr, sir=args.sir, rt60=args.rt60, drr=args.drr,
            prompt_seconds=args.prompt_seconds, mask_fraction=args.mask_fraction,
            noise_kinds=args.noise_kinds,
        )  # fmt: skip
        settings = TokenShardSettings(
            input=args.input, output=args.output, codec=args.codec, tasks=args.tasks,
            templates=args.templates, pairs=pairs, noise=args.noise, language=args.language,
            kmeans=args.kmeans, bpe=args.bpe, n_q=args.n_q, vocabulary=args.vocabulary,
            max_batch_seconds=args.max_batch_seconds, shard_max_samples=args.shard_max_samples,
            device=args.device, workers=args.workers, threads=args.threads,
            overwrite=args.overwrite, progress=not args.no_progress, max_shards=args.max_shards,
        )  # fmt: skip
        result = make_token_shards(settings)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        print(f"make_token_shards: error: {e}", file=sys.stderr)
        return 2
    for entry in result.skipped[:20]:
        task = f" [{entry['task']}]" if entry.get("task") else ""
        detail = f" ({entry['detail']})" if entry.get("detail") else ""
        print(f"left out {entry['key']}{task}: {entry['reason']}{detail}")
    if len(result.skipped) > 20:
        print(f"... and {len(result.skipped) - 20} more (see report.json)")
    print(result.summary())
    if args.strict and result.skipped:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
