"""``lit-codec generate``: conditions in, a codec LM's tokens out, decoded to audio by the codec.

Each condition segment of the task's template reads one sample field; this command makes
the field from what the user typed:

============================================  ==============================================
field (template ``source``)                   option
============================================  ==============================================
``noisy_codes``, ``mixture_codes``,           ``--input AUDIO`` (encoded by ``--codec``)
``reverberant_codes``
``masked_codes``                              ``--input AUDIO --mask START:END`` (seconds)
``prompt_codes``                              ``--prompt AUDIO`` (its first ``max_seconds``)
``phones``                                    ``--text "..." [--language en]``
``text``                                      ``--text "..."`` (UTF-8 bytes)
``midi``                                      ``--midi FILE``
============================================  ==============================================
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lit_codec.commands.common import DEFAULT_CODEC, run_guarded

__all__ = ["check_codec", "main", "parser"]

CODEC_INPUTS = ("noisy_codes", "mixture_codes", "reverberant_codes")


def parser() -> argparse.ArgumentParser:
    """The options of ``lit-codec generate``."""
    p = argparse.ArgumentParser(
        prog="lit-codec generate",
        description="generate a task's target audio with a codec LM (CodecLM checkpoint) and decode it",
    )
    p.add_argument("--ckpt", required=True, help="CodecLM checkpoint (.ckpt)")
    p.add_argument("--codec", default=DEFAULT_CODEC,
                   help=f"the codec the LM's tokens come from (default {DEFAULT_CODEC}); its fingerprint must be the LM's")  # fmt: skip
    p.add_argument("--task", required=True, help="task name (se, tse, dereverb, tts, ...)")
    p.add_argument("--templates", default=None, help="tasks YAML (default recipes/lm/tasks.yaml)")
    src = p.add_argument_group("conditions")
    src.add_argument("--input", help="audio to enhance / extract from / dereverberate / edit")
    src.add_argument(
        "--inputs", help="a text file of input audio paths, one per line (with --output-dir)"
    )
    src.add_argument("--prompt", help="audio of the target speaker (tts, vc, tse)")
    src.add_argument("--text", help="text (tts: phonemized; text-to-sound/music, instructed tts)")
    src.add_argument("--language", default="en", help="language of --text for phones (default en)")
    src.add_argument("--midi", help="MIDI file (singing voice synthesis)")
    src.add_argument(
        "--mask", metavar="START:END", help="seconds of --input to regenerate (speech editing)"
    )
    out = p.add_argument_group("output")
    out.add_argument("--output", help="audio file to write")
    out.add_argument("--output-dir", help="folder of outputs, one per line of --inputs")
    out.add_argument(
        "--codes-output", help="also save the generated codes (.npz, codes (n_q, frames))"
    )
    s = p.add_argument_group("sampling")
    s.add_argument("--temperature", type=float, default=1.0)
    s.add_argument("--top-k", type=int, default=None)
    s.add_argument("--top-p", type=float, default=None)
    s.add_argument("--greedy", action="store_true", help="most likely token everywhere")
    s.add_argument("--cfg-coef", type=float, default=1.0, help="classifier-free guidance (1: off)")
    s.add_argument("--max-seconds", type=float, default=None,
                   help="most audio generated (default: the input's length + 20 %% for time-aligned tasks, else 20 s)")  # fmt: skip
    s.add_argument("--min-seconds", type=float, default=0.0)
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--batch-size", type=int, default=8, help="inputs generated together (--inputs)")
    s.add_argument(
        "--no-cache",
        action="store_true",
        help="recompute the full forward at every step (checking, timing)",
    )
    s.add_argument("--device", default="cpu")
    out.add_argument(
        "--stream",
        action="store_true",
        help="write the audio chunk by chunk while frames are generated (a causal codec decodes "
        "frame by frame; the shipped non-causal one in windows with --stream-context frames of "
        "look-ahead, equal to offline decoding)",
    )
    out.add_argument(
        "--stream-chunk", type=int, default=10, help="frames decoded at once (default 10)"
    )
    out.add_argument("--stream-context", type=int, default=None,
                     help="context frames of a non-causal codec's windows (default 16)")  # fmt: skip
    return p


@dataclass
class _Job:
    """One generation: its sample fields and where its audio goes."""

    fields: dict[str, np.ndarray]
    output: Path
    aligned_frames: int | None  # frames of a time-aligned condition (the input's length)


def check_codec(codec, vocab, codec_name: str, ckpt: str) -> None:
    """Refuse a codec whose fingerprint is not the one the LM's vocabulary records."""
    info = vocab.codec
    if codec.fingerprint != info.fingerprint:
        raise ValueError(
            f"codec {codec_name} (fingerprint {codec.fingerprint}) is not the codec the LM {ckpt} "
            f"was trained on (fingerprint {info.fingerprint}, {info.sample_rate} Hz, {info.n_q} x "
            f"{info.codebook_size} codes): pass the codec its token shards were made with as --codec"
        )


def _fields(
    a: argparse.Namespace, template, tokenizer, input_path: str | None
) -> tuple[dict, int | None]:
    """The sample fields of ``template``'s condition segments from the options."""
    from lit_codec.codec import load_audio
    from lit_codec.data.pairs import masked_codes

    fields: dict[str, np.ndarray] = {}
    aligned = None
    rate = tokenizer.sample_rate
    segments = ", ".join(f"{s.name} ({s.source})" for s in template.conditions)
    wanted = {s.source for s in template.conditions}
    given = {
        "--input": input_path,
        "--prompt": a.prompt,
        "--text": a.text,
        "--midi": a.midi,
        "--mask": a.mask,
    }
    uses = {
        "--input": bool(wanted & {*CODEC_INPUTS, "masked_codes", "semantic"}),
        "--prompt": "prompt_codes" in wanted,
        "--text": bool(wanted & {"phones", "text"}),
        "--midi": "midi" in wanted,
        "--mask": "masked_codes" in wanted,
    }
    extra = [o for o, v in given.items() if v is not None and not uses[o]]
    if extra:
        raise ValueError(
            f"task {template.name} does not take {', '.join(extra)}; its conditions: {segments}"
        )
    missing = [o for o, used in uses.items() if used and given[o] is None]
    if missing:
        raise ValueError(
            f"task {template.name} needs {', '.join(missing)}; its conditions: {segments}"
        )
    for seg in template.conditions:
        source = seg.source
        if source in CODEC_INPUTS or source == "masked_codes":
            codes = tokenizer.encode(load_audio(input_path, rate).numpy(), rate)  # (frames, n_q)
            aligned = len(codes)
            if source == "masked_codes":
                start, _, stop = a.mask.partition(":")
                span = (
                    int(float(start) * tokenizer.frame_rate),
                    int(np.ceil(float(stop) * tokenizer.frame_rate)),
                )
                if not 0 <= span[0] < span[1] <= len(codes):
                    raise ValueError(
                        f"--mask {a.mask}: not a span inside the {len(codes) / tokenizer.frame_rate:.2f} s input"
                    )
                codes = masked_codes(codes, span)
            fields[source] = codes
        elif source == "prompt_codes":
            fields[source] = tokenizer.encode(load_audio(a.prompt, rate).numpy(), rate)
        elif source == "phones":
            from lit_codec.tokenizers.phones import PhoneTokenizer

            fields[source] = PhoneTokenizer(on_unknown="raise").encode(a.text, a.language)
        elif source == "text":
            from lit_codec.tokenizers.text import ByteTokenizer

            fields[source] = ByteTokenizer().encode(a.text)
        elif source == "midi":
            from lit_codec.tokenizers.midi import MidiTokenizer

            fields[source] = MidiTokenizer(frame_rate=tokenizer.frame_rate).encode(a.midi)
        else:
            raise ValueError(f"generate cannot make field {source!r} of segment {seg.name} yet")
    return fields, aligned


def run(a: argparse.Namespace) -> None:
    """Generate and decode for every input."""
    import soundfile as sf
    import torch

    from lit_codec.lm.generate import GenerationConfig, Prefix, generate
    from lit_codec.lm.sequence import build_sequence
    from lit_codec.lm.templates import load_templates
    from lit_codec.models.codec_lm import load_network
    from lit_codec.tokenizers.codec import CodecTokenizer

    if (a.output is None) == (a.output_dir is None) or (a.output_dir is not None) != (
        a.inputs is not None
    ):
        raise ValueError("give --output (one input), or --inputs LIST with --output-dir DIR")
    network, vocab = load_network(a.ckpt, map_location=a.device)
    templates = load_templates(a.templates)
    if a.task not in templates or a.task not in vocab.tasks:
        raise ValueError(
            f"the LM {a.ckpt} was not trained for task {a.task!r}; its tasks: {list(vocab.tasks)}"
        )
    template = templates[a.task]
    tokenizer = CodecTokenizer(a.codec, device=a.device, n_q=vocab.codec.n_q)
    check_codec(tokenizer.codec, vocab, a.codec, a.ckpt)
    if a.inputs is not None:
        paths = [line.strip() for line in Path(a.inputs).read_text().splitlines() if line.strip()]
        if not paths:
            raise ValueError(f"{a.inputs} lists no input")
        out_dir = Path(a.output_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        pairs = [(p, out_dir / (Path(p).stem + ".wav")) for p in paths]
    else:
        pairs = [(a.input, Path(a.output))]
    jobs = []
    for path, out in pairs:
        fields, aligned = _fields(a, template, tokenizer, path)
        fields[template.target.source] = np.zeros(
            (0, vocab.codec.n_q), np.int16
        )  # the target: to generate
        jobs.append(_Job(fields, out, aligned))
    fps = vocab.codec.frame_rate
    codec = tokenizer.codec
    for first in range(0, len(jobs), max(1, a.batch_size)):
        group = jobs[first : first + max(1, a.batch_size)]
        if a.max_seconds is not None:
            max_frames = int(round(a.max_seconds * fps))
        else:
            aligned = [j.aligned_frames for j in group if j.aligned_frames is not None]
            max_frames = int(1.2 * max(aligned)) + 1 if aligned else int(20 * fps)
        config = GenerationConfig(
            temperature=a.temperature, top_k=a.top_k, top_p=a.top_p, greedy=a.greedy,
            max_frames=max_frames, min_frames=min(max_frames, int(a.min_seconds * fps)),
            cfg_coef=a.cfg_coef, seed=a.seed + first, use_cache=not a.no_cache,
        )  # fmt: skip
        sequences = [build_sequence(vocab, template, j.fields) for j in group]
        prefix = Prefix.from_sequences(sequences, vocab)
        with ExitStack() as stack:
            streamers = (
                [_streamer(stack, a, codec, job.output) for job in group] if a.stream else None
            )
            started = time.perf_counter()
            result = generate(network, vocab, prefix, config,
                              on_frames=None if streamers is None else _router(streamers))  # fmt: skip
        for i, job in enumerate(group):
            n = int(result.lengths[i])
            codes = result.codes[i, :n].T.contiguous()  # (n_q, frames)
            if streamers is None:
                with torch.no_grad():
                    audio = codec.decode(codes[None].to(tokenizer.device))
                audio = audio[0, 0].float().cpu().numpy()
                job.output.parent.mkdir(parents=True, exist_ok=True)
                sf.write(job.output, np.clip(audio, -1, 1), codec.sample_rate)
            else:
                first = streamers[i].first_audio_at
                heard = (
                    "no audio" if first is None else f"first audio after {first - started:.2f} s"
                )
                print(
                    f"{job.output}: streamed, {heard} ({'frame by frame' if streamers[i].causal else 'in windows'})"
                )
            state = (
                "ended"
                if bool(result.finished[i])
                else f"stopped at --max-seconds {max_frames / fps:.2f}"
            )
            print(f"{job.output}: {n} frames ({n / fps:.2f} s, {state}); "
                  f"{result.frames_per_second:.1f} frames/s for the batch of {len(group)}")  # fmt: skip
            if a.codes_output is not None and len(jobs) == 1:
                np.savez(a.codes_output, codes=codes.numpy().astype(np.int16), task=a.task,
                         vocab_hash=vocab.hash, frame_rate=fps)  # fmt: skip


def _streamer(stack: ExitStack, a: argparse.Namespace, codec, output: Path):
    """An AudioStreamer writing to ``output`` (a WAV written and flushed chunk by chunk)."""
    import soundfile as sf

    from lit_codec.lm.audio_stream import AudioStreamer

    output.parent.mkdir(parents=True, exist_ok=True)
    writer = stack.enter_context(
        sf.SoundFile(output, "w", samplerate=codec.sample_rate, channels=1)
    )

    def write(chunk: np.ndarray) -> None:
        writer.write(np.clip(chunk, -1, 1))
        writer.flush()

    return stack.enter_context(AudioStreamer(codec, write, a.stream_chunk, a.stream_context))


def _router(streamers: list) -> Callable:
    """The ``on_frames`` callback handing each sequence's frames to its streamer."""

    def on_frames(chunk) -> None:
        streamer = streamers[chunk.sample]
        streamer.push(chunk.codes)
        if chunk.ended:
            streamer.finish()

    return on_frames


def main(argv: list[str]) -> None:
    """``lit-codec generate ARGS``."""
    run_guarded("generate", run, parser().parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
