"""One group of audio samples -> token samples: the fields their tasks' templates read.

:class:`SampleBuilder` is the per-sample half of ``make_token_shards``: for each sample it
reads the audio, makes every field the requested tasks read (template ``source`` fields),
decides which tasks the sample serves, encodes all audio fields of a group in one batched
codec call, and returns the samples with their metadata and a report entry for every task a
sample could not serve. The fields it knows:

=====================  ====================================================================
``codes``              the sample's codes ``(frames, n_q)`` int16 (every task's target)
``noisy_codes``        codes of the sample + noise (:meth:`PairMaker.noisy`)
``mixture_codes``      codes of the sample + another speaker (:meth:`PairMaker.mixture`)
``reverberant_codes``  codes of the sample in a synthetic room (:meth:`PairMaker.reverberant`)
``prompt_codes``       codes of a prompt of the same speaker (:meth:`PairMaker.prompt`)
``masked_codes``       ``codes`` with a span set to -1 (:meth:`PairMaker.mask`)
``phones``             phone ids of the transcript (``text``) in the sample's ``language``
``semantic``           k-means units of the audio (:class:`SemanticTokenizer`)
``midi``               per-frame MIDI ids of the file the metadata's ``midi`` names
``text``               text ids of the description: ``instruction``, ``caption`` or
                       ``description`` (also under ``extra``), else the transcript (not
                       for ``instruct_tts``)
=====================  ====================================================================

Token fields are stored int16 (int32 for a vocabulary past 32767 ids).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from lit_codec.data.pairs import NoiseBank, PairMaker, PairSettings, masked_codes
from lit_codec.data.shard_catalog import DrawError, ShardCatalog
from lit_codec.lm.templates import TaskTemplate

if TYPE_CHECKING:  # the tokenizers are imported where they are built
    from lit_codec.tokenizers.codec import CodecTokenizer

__all__ = [
    "AUDIO_FIELDS",
    "FIELDS",
    "ConditionTokenizers",
    "FieldError",
    "SampleBuilder",
    "TokenSample",
]

# audio field -> what PairMaker makes it from (None: the sample itself)
AUDIO_FIELDS = {
    "codes": None,
    "noisy_codes": "noisy",
    "mixture_codes": "mixture",
    "reverberant_codes": "reverberant",
    "prompt_codes": "prompt",
}
# token field -> the condition tokenizer that makes it
TOKEN_FIELDS = {"phones": "phone", "semantic": "semantic", "midi": "midi", "text": "text"}
FIELDS = (*AUDIO_FIELDS, "masked_codes", *TOKEN_FIELDS)
DESCRIPTION_KEYS = ("instruction", "caption", "description")
DESCRIBED_TASKS = ("instruct_tts",)  # their text must be a description, not the transcript


class FieldError(Exception):
    """A field cannot be made for a sample; ``reason`` is short and stable for reports."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(reason + (f" ({detail})" if detail else ""))


@dataclass
class TokenSample:
    """One sample of a token shard.

    Args:
        key: the sample key (that of the audio sample).
        fields: field name -> array (``codes`` ``(frames, n_q)`` int16, ...).
        meta: the json written beside them.
    """

    key: str
    fields: dict[str, np.ndarray]
    meta: dict[str, Any]


@dataclass
class ConditionTokenizers:
    """The condition tokenizers the requested tasks need (None where none is needed).

    Args:
        phone: a :class:`~lit_codec.tokenizers.PhoneTokenizer`.
        semantic: a :class:`~lit_codec.tokenizers.SemanticTokenizer`.
        midi: a :class:`~lit_codec.tokenizers.MidiTokenizer` at the codec's frame rate.
        text: a :class:`~lit_codec.tokenizers.ByteTokenizer` or ``BPETokenizer``.
    """

    phone: Any = None
    semantic: Any = None
    midi: Any = None
    text: Any = None

    @classmethod
    def build(
        cls,
        needed: Sequence[str],
        frame_rate: float,
        kmeans: str | os.PathLike | None = None,
        bpe: str | os.PathLike | None = None,
    ) -> ConditionTokenizers:
        """Build the tokenizers named in ``needed`` (``phone``, ``semantic``, ``midi``, ``text``).

        Raises:
            ValueError: ``semantic`` without a k-means file, or one fitted on features this
                builder cannot recompute.
            ImportError: a tokenizer's optional package is missing (names the pip package).
        """
        out = cls()
        if "phone" in needed:
            from lit_codec.tokenizers.phones import PhoneTokenizer

            out.phone = PhoneTokenizer(on_unknown="raise")
            out.phone.espeak_version()  # fail now, not in the middle of a run
        if "semantic" in needed:
            out.semantic = _semantic_tokenizer(kmeans)
        if "midi" in needed:
            from lit_codec.tokenizers.midi import MidiTokenizer

            out.midi = MidiTokenizer(frame_rate=frame_rate)
        if "text" in needed:
            from lit_codec.tokenizers.text import BPETokenizer, ByteTokenizer

            out.text = BPETokenizer(bpe) if bpe is not None else ByteTokenizer()
        return out

    def get(self, name: str) -> Any:
        return getattr(self, name)


def _semantic_tokenizer(kmeans: str | os.PathLike | None) -> Any:
    from lit_codec.tokenizers.features import MFCCFeatures
    from lit_codec.tokenizers.kmeans import KMeansQuantizer
    from lit_codec.tokenizers.semantic import SemanticTokenizer

    if kmeans is None:
        raise ValueError(
            "semantic tokens need a k-means file (--kmeans): fit one with "
            "'python -m lit_codec.tokenizers.kmeans AUDIO_DIR kmeans.safetensors --k 500'"
        )
    quantizer = KMeansQuantizer.load(kmeans)
    features = dict(quantizer.info.get("features") or {})
    if features.get("kind") != "mfcc":
        raise ValueError(
            f"k-means {kmeans} was fitted on {features.get('kind')!r} features; token shards "
            "recompute MFCC features only (fit the k-means with lit_codec.tokenizers.kmeans)"
        )
    features.pop("kind")
    return SemanticTokenizer(MFCCFeatures(**features), quantizer)


@dataclass
class _State:
    """A sample on its way through :meth:`SampleBuilder.build`."""

    i: int
    key: str
    meta: dict[str, Any]
    audio: np.ndarray
    frames: int
    clips: dict[str, np.ndarray] = field(default_factory=dict)  # audio field -> its audio
    values: dict[str, np.ndarray] = field(default_factory=dict)  # finished fields
    pairs: dict[str, Any] = field(default_factory=dict)  # what was drawn, for the json
    errors: dict[str, FieldError] = field(default_factory=dict)
    span: tuple[int, int] | None = None
    phone_text: tuple[str, str] | None = None  # (text, language) waiting to be phonemized
    tasks: list[str] = field(default_factory=list)
    needed: list[str] = field(default_factory=list)  # the fields the served tasks read


class SampleBuilder:
    """Makes the token samples of groups of audio samples.

    Args:
        templates: the requested tasks, in template-file order.
        catalog: the audio shards.
        codec: the codec tokenizer.
        conditions: the condition tokenizers the tasks need.
        pairs: how pairs are drawn.
        noise: recordings for noisy speech; None: built-in noise kinds.
        language: language of samples whose metadata names none (None: such samples
            serve no phone task).
    """

    def __init__(
        self,
        templates: Sequence[TaskTemplate],
        catalog: ShardCatalog,
        codec: CodecTokenizer,
        conditions: ConditionTokenizers,
        pairs: PairSettings,
        noise: NoiseBank | None = None,
        language: str | None = None,
    ):
        self.templates = list(templates)
        self.catalog = catalog
        self.codec = codec
        self.conditions = conditions
        self.pair_settings = pairs
        self.noise = noise
        self.language = language
        needed = {s for t in self.templates for s in t.sources}
        self.fields = [f for f in FIELDS if f in needed]  # fixed order
        self._makers: dict[str, PairMaker] = {}

    def maker(self, split: str) -> PairMaker:
        if split not in self._makers:
            self._makers[split] = PairMaker(
                self.pair_settings,
                self.codec.sample_rate,
                self.catalog.speaker_index(split),
                self._read_audio,
                lambda i: self.catalog.entries[i].key,
                self.noise,
            )
        return self._makers[split]

    def _read_audio(self, i: int) -> np.ndarray:
        try:
            audio, rate = self.catalog.read_audio(i)
        except ValueError as err:
            raise FieldError("unreadable audio", str(err)) from err
        if rate != self.codec.sample_rate:
            raise FieldError(
                "sample rate",
                f"{self.catalog.entries[i].key} is at {rate} Hz, not {self.codec.sample_rate} Hz",
            )
        return audio

    # ------------------------------------------------------------------ the group
    def build(
        self, split: str, ids: Sequence[int]
    ) -> tuple[list[TokenSample], list[dict[str, Any]]]:
        """The token samples of catalog ids ``ids`` (of ``split``), and the report entries.

        Returns:
            the samples that serve at least one task, in order; one report entry
            ``{key, split, shard, task, reason, detail, kept}`` per sample and task it does
            not serve (``task`` None when the sample itself is unusable).
        """
        report: list[dict[str, Any]] = []
        states = []
        for i in ids:
            entry = self.catalog.entries[i]
            try:
                meta = self.catalog.read_meta(i)
                audio = self._read_audio(i)
                if len(audio) == 0:
                    raise FieldError("empty audio", "the sample holds no samples")
            except FieldError as err:
                report.append(self._entry(i, None, err, kept=False))
                continue
            except ValueError as err:
                report.append(
                    self._entry(i, None, FieldError("unreadable metadata", str(err)), kept=False)
                )
                continue
            state = _State(i, entry.key, meta, audio, self.codec.frames(len(audio)))
            for name in self.fields:
                try:
                    self._make(split, name, state)
                except FieldError as err:
                    state.errors[name] = err
                except DrawError as err:
                    state.errors[name] = FieldError(err.reason, err.detail)
                except (ValueError, OSError) as err:  # odd data must not stop the run
                    state.errors[name] = FieldError(
                        f"{name} failed", f"{type(err).__name__}: {err}"
                    )
            states.append(state)
        self._phonemize(states)
        for state in states:
            failures = {t.name: self._task_error(t, state) for t in self.templates}
            state.tasks = [name for name, err in failures.items() if err is None]
            for name, err in failures.items():
                if err is not None:
                    report.append(self._entry(state.i, name, err, bool(state.tasks)))
        kept = [s for s in states if s.tasks]
        self._encode(kept)
        return [self._sample(split, s) for s in kept], report

    @staticmethod
    def _task_error(template: TaskTemplate, s: _State) -> FieldError | None:
        """Why the sample cannot serve the task (its first field that failed), or None."""
        failed = next((f for f in template.sources if f in s.errors), None)
        if failed is not None:
            return s.errors[failed]
        if template.name in DESCRIBED_TASKS and s.pairs.get("text", {}).get("from") == "text":
            return FieldError(
                "no instruction", f"the metadata has none of {', '.join(DESCRIPTION_KEYS)}"
            )
        return None

    def _entry(self, i: int, task: str | None, err: FieldError, kept: bool) -> dict[str, Any]:
        e = self.catalog.entries[i]
        return {
            "key": e.key,
            "split": e.split,
            "shard": self.catalog.shard_name(i),
            "task": task,
            "reason": err.reason,
            "detail": err.detail,
            "kept": kept,
        }

    # ------------------------------------------------------------------ fields
    def _make(self, split: str, name: str, s: _State) -> None:
        maker = self.maker(split) if name != "codes" else None
        if name == "codes":
            s.clips[name] = s.audio
        elif name == "masked_codes":
            s.span, s.pairs["masked"] = maker.mask(s.i, s.frames)
        elif name in AUDIO_FIELDS:
            kind = AUDIO_FIELDS[name]
            if kind == "prompt":
                s.clips[name], s.pairs[kind] = maker.prompt(s.i)
            else:
                s.clips[name], s.pairs[kind] = getattr(maker, kind)(s.i, s.audio)
        elif name == "phones":
            s.phone_text = (self._transcript(s.meta), self._language(s.meta))
        elif name == "semantic":
            sem = self.conditions.semantic
            aligned = abs(sem.frame_rate - self.codec.frame_rate) < 1e-6
            ids = sem.encode(
                s.audio, self.codec.sample_rate, n_frames=s.frames if aligned else None
            )
            s.values[name] = self._tokens(ids, sem)
        elif name == "midi":
            s.values[name] = self._tokens(self._midi(s), self.conditions.midi)
        elif name == "text":
            tok = self.conditions.text
            text, s.pairs["text"] = self._description(s.meta)
            s.values[name] = self._tokens(tok.encode(text), tok)
        else:  # pragma: no cover - make_token_shards checks the fields first
            raise FieldError("unknown field", name)

    @staticmethod
    def _tokens(ids: np.ndarray, tokenizer: Any) -> np.ndarray:
        dtype = np.int16 if tokenizer.vocab_size <= 1 << 15 else np.int32
        return np.asarray(ids).astype(dtype)

    @staticmethod
    def _transcript(meta: dict[str, Any]) -> str:
        text = meta.get("text")
        if isinstance(text, str) and text.strip():
            return text
        if meta.get("source_text"):
            raise FieldError(
                "no transcript",
                "the transcript belongs to the whole file this segment was cut from (source_text)",
            )
        raise FieldError("no transcript", "the metadata has no text")

    def _language(self, meta: dict[str, Any]) -> str:
        language = meta.get("language") or self.language
        if not language:
            raise FieldError("no language", "the metadata names none and no default was given")
        try:
            return self.conditions.phone.resolve_language(str(language))
        except ValueError as err:
            raise FieldError("unsupported language", str(err)) from err

    @staticmethod
    def _description(meta: dict[str, Any]) -> tuple[str, dict[str, str]]:
        """The text of the ``text`` field and where it came from (``{"from": key}``)."""
        extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
        for key in DESCRIPTION_KEYS:
            value = meta.get(key) or extra.get(key)
            if isinstance(value, str) and value.strip():
                return value, {"from": key}
        text = meta.get("text")
        if isinstance(text, str) and text.strip():
            return text, {"from": "text"}
        raise FieldError("no text", f"the metadata has none of {', '.join(DESCRIPTION_KEYS)}, text")

    def _midi(self, s: _State) -> np.ndarray:
        from lit_codec.tokenizers.midi import MidiError

        extra = s.meta.get("extra") if isinstance(s.meta.get("extra"), dict) else {}
        name = s.meta.get("midi") or extra.get("midi")
        if not name:
            raise FieldError("no MIDI", "the metadata names no midi file")
        path = Path(name)
        if not path.is_absolute() and s.meta.get("source"):
            path = Path(s.meta["source"]).parent / path
        try:
            return self.conditions.midi.encode(path, n_frames=s.frames)
        except (MidiError, FileNotFoundError, OSError) as err:
            raise FieldError("unreadable MIDI", str(err)) from err

    def _phonemize(self, states: list[_State]) -> None:
        """Phone ids of every waiting transcript: one espeak-ng call per language."""
        phone = self.conditions.phone
        by_language: dict[str, list[_State]] = {}
        for s in states:
            if s.phone_text is not None:
                by_language.setdefault(s.phone_text[1], []).append(s)
        for language, group in by_language.items():
            texts = [s.phone_text[0] for s in group]
            try:
                results: list[Any] = phone.encode_batch(texts, language)
            except ValueError:  # an unknown phone in one text: find it, keep the others
                results = []
                for text in texts:
                    try:
                        results.append(phone.encode(text, language))
                    except ValueError as err:
                        results.append(FieldError("unknown phone", str(err)))
            for s, ids in zip(group, results):
                if isinstance(ids, FieldError):
                    s.errors["phones"] = ids
                elif len(ids) == 0:
                    s.errors["phones"] = FieldError(
                        "no phones", f"espeak-ng gave none for {s.phone_text[0]!r}"
                    )
                else:
                    s.values["phones"] = self._tokens(ids, phone)
            for s in group:
                s.pairs.setdefault("phones", {"language": language})

    def _encode(self, states: list[_State]) -> None:
        """Codes of every audio field the samples' tasks read, in one batched call."""
        clips, owners = [], []
        for s in states:
            needed = {src for t in self.templates if t.name in s.tasks for src in t.sources}
            if "masked_codes" in needed:
                needed.add("codes")
            for name in self.fields:
                if name in needed and name in s.clips:
                    clips.append(s.clips[name])
                    owners.append((s, name))
            s.values = {k: v for k, v in s.values.items() if k in needed}
            s.pairs = {k: v for k, v in s.pairs.items() if _pair_field(k) in needed}
            s.needed = sorted(needed)
        for (s, name), codes in zip(owners, self.codec.encode_batch(clips, self.codec.sample_rate)):
            s.values[name] = codes
        for s in states:
            if "masked_codes" in s.needed:
                s.values["masked_codes"] = masked_codes(s.values["codes"], s.span)
            s.values = {k: s.values[k] for k in s.needed}

    def _sample(self, split: str, s: _State) -> TokenSample:
        m = s.meta
        meta = {
            "key": s.key,
            "split": split,
            "speaker": m.get("speaker"),
            "language": m.get("language"),
            "text": m.get("text"),
            "duration": round(len(s.audio) / self.codec.sample_rate, 6),
            "num_samples": len(s.audio),
            "frames": s.frames,
            "tasks": s.tasks,
            "fields": sorted(s.values),
            "pairs": s.pairs,
            "source": m.get("source"),
            "source_shard": self.catalog.shard_name(s.i),
        }
        return TokenSample(s.key, s.values, meta)


def _pair_field(kind: str) -> str:
    """The field a ``pairs`` entry of the json describes."""
    return {"masked": "masked_codes", "phones": "phones", "text": "text"}.get(kind, f"{kind}_codes")
