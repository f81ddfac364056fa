"""``lit-codec tokens``: show the task sequences a codec LM is fed, decoded to their segments."""

from __future__ import annotations

import argparse
import json
import sys

from lit_codec.commands.common import run_guarded

__all__ = ["main", "parser"]


def parser() -> argparse.ArgumentParser:
    """The options of ``lit-codec tokens``."""
    p = argparse.ArgumentParser(
        prog="lit-codec tokens",
        description="print the codec-LM sequences of token shards (data_prep/make_token_shards.py), "
        "decoded back to their named segments",
    )
    p.add_argument(
        "--input", required=True, metavar="DIR", help="token-shard directory (holds index.json)"
    )
    p.add_argument("--split", default="train", help="split of the index (default: train)")
    p.add_argument("--task", action="append", default=None, metavar="T",
                   help="only this task (repeatable); default: every task each sample serves")  # fmt: skip
    p.add_argument(
        "--count", type=int, default=5, metavar="N", help="sequences to print (default 5)"
    )
    p.add_argument(
        "--first", type=int, default=8, metavar="K", help="ids listed per segment (default 8)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per sequence (JSON lines)")
    return p


def _token_text(vocabulary, ids: list[int]) -> str:
    """``cb0:513 cb1:20 ...`` for codec ids, ``phone:12`` for others (local values)."""
    parts = []
    for token in vocabulary.decode(ids):
        if token.modality == "codec":
            parts.append(f"cb{token.codebook}:{token.value}")
        else:
            parts.append(f"{token.modality}:{token.value}")
    return " ".join(parts)


def run(a: argparse.Namespace) -> None:
    """Print ``a.count`` sequences of ``a.input``."""
    from lit_codec.data.shards import iter_tar_samples, split_from_root
    from lit_codec.data.token_datamodule import TokenShardDataModule
    from lit_codec.data.token_stream import decode_token_sample
    from lit_codec.lm.sequence import describe_sequence

    if a.count < 1:
        raise ValueError(f"--count must be positive, got {a.count}")
    data = TokenShardDataModule(a.input, tasks=None, num_workers=0)
    data.read_index()
    shard_tasks = list(data.weights)
    tasks = a.task or shard_tasks
    unknown = [t for t in tasks if t not in shard_tasks]
    if unknown:
        raise ValueError(f"--task {unknown}: the shards in {a.input} hold the tasks {shard_tasks}")
    data = TokenShardDataModule(a.input, tasks=dict.fromkeys(tasks, 1.0), num_workers=0)
    maker = data.maker(random_crops=False)
    vocab = data.vocabulary
    shards = split_from_root(a.input, a.split)
    if not a.json:
        print(f"{a.input}: vocabulary {vocab.hash} ({vocab.size} ids, {vocab.codec.n_q} codebooks x "
              f"{vocab.codec.codebook_size}, {vocab.codec.frame_rate:g} frames/s); split {a.split}: "
              f"{shards.num_samples} samples; tasks {shard_tasks}")  # fmt: skip
    shown = 0
    problems: list[str] = []

    def skip(exc: Exception) -> bool:
        problems.append(str(exc))
        return True

    for raw in iter_tar_samples(shards.urls, skip):
        try:
            sample = decode_token_sample(raw)
            sequences = [(t, maker.build(sample, t)) for t in maker.tasks_of(sample)]
        except ValueError as err:
            problems.append(str(err))
            continue
        for task, seq in sequences:
            info = describe_sequence(vocab, seq, first=a.first)
            info = {"key": sample.key, **info}
            if a.json:
                print(json.dumps(info))
            else:
                print(f"\n{sample.key}  task {task}: {info['frames']} frames, {info['tokens']} tokens, "
                      f"{info['loss_tokens']} in the loss")  # fmt: skip
                print(
                    f"  prefix     {' '.join(t.name or '?' for t in vocab.decode(info['prefix']))}"
                )
                for segment in info["segments"]:
                    role = "target" if segment["target"] else "condition"
                    seconds = (f", {segment['frames'] / vocab.codec.frame_rate:.2f} s"
                               if segment["modality"] == "codec" else "")  # fmt: skip
                    print(f"  {segment['name']:<10} {segment['modality']:<9} {role:<9} "
                          f"frames {segment['start']}-{segment['stop']} ({segment['frames']}{seconds})  "
                          f"{_token_text(vocab, segment['first_ids'])}")  # fmt: skip
            shown += 1
            if shown >= a.count:
                break
        if shown >= a.count:
            break
    for problem in problems:
        print(f"lit-codec tokens: skipped: {problem}", file=sys.stderr)
    if shown == 0:
        raise ValueError(f"no sequence of the tasks {tasks} in the {a.split} split of {a.input}")


def main(argv: list[str]) -> None:
    """``lit-codec tokens ARGS``."""
    run_guarded("tokens", run, parser().parse_args(argv))
