"""Task templates: which segments make up each task's ``[condition, target]`` sequence.

The templates are data, read from ``recipes/lm/tasks.yaml``; adding a task means adding an
entry there, no code. Each task lists its segments in order; each segment names its
modality (which id range its tokens use), the tokenizer that produces them, the sample
field it reads (``source``), and whether it is the target (exactly one: the last)::

    tasks:
      - name: tts
        segments:
          - {name: phone, modality: phone, tokenizer: phone, source: phones}
          - {name: prompt, modality: codec, tokenizer: codec, source: prompt_codes, max_seconds: 3}
          - {name: audio, modality: codec, tokenizer: codec, source: codes, target: true}

Every segment is framed by its own markers ``<{name}_start>`` / ``<{name}_end>``.
:func:`vocabulary_for` builds (or extends) a :class:`~lit_codec.lm.vocab.Vocabulary` whose
tasks and segment markers are those of the templates; :func:`lit_codec.lm.sequence.build_sequence`
turns a template and a sample into a token sequence.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lit_codec.lm.vocab import _NAME, CODEC, EMBEDDING, CodecInfo, Vocabulary

__all__ = [
    "DEFAULT_TEMPLATES",
    "MODALITIES",
    "SegmentTemplate",
    "TaskTemplate",
    "TemplateError",
    "load_templates",
    "vocabulary_for",
]

DEFAULT_TEMPLATES = Path(__file__).resolve().parents[2] / "recipes" / "lm" / "tasks.yaml"
# the modalities a template may name; ``embedding``: continuous vectors (T5 text), no ids
MODALITIES = (CODEC, "phone", "midi", "text", "semantic", EMBEDDING)
_REQUIRED = ("name", "modality", "tokenizer", "source")
_OPTIONAL = ("target", "max_seconds", "masked")


class TemplateError(ValueError):
    """A task template is malformed; the message names the file, the task and the field."""


@dataclass(frozen=True)
class SegmentTemplate:
    """One segment of a task sequence.

    Args:
        name: segment name; its markers are ``<{name}_start>`` / ``<{name}_end>``.
        modality: ``codec``, ``phone``, ``midi``, ``text``, ``semantic`` or ``embedding``.
        tokenizer: the tokenizer that produces the source field (``codec``, ``phone``, ...).
        source: the sample field the segment reads: codes ``(frames, n_q)`` for codec
            segments, a 1-D int array of local values for token segments, a float
            ``(T, D)`` array for embedding segments.
        target: whether the model is trained to predict this segment.
        max_seconds: codec segments only: keep at most this many seconds of codes.
        masked: codec segments only: frames whose codes are all negative become ``<mask>``.
    """

    name: str
    modality: str
    tokenizer: str
    source: str
    target: bool = False
    max_seconds: float | None = None
    masked: bool = False


@dataclass(frozen=True)
class TaskTemplate:
    """A task: its segments in sequence order, the last one the target.

    Args:
        name: task name; its token is ``<{name}_task>``.
        segments: the segments in order.
        description: what the task does (free text).
    """

    name: str
    segments: tuple[SegmentTemplate, ...]
    description: str = ""

    @property
    def target(self) -> SegmentTemplate:
        return self.segments[-1]

    @property
    def conditions(self) -> tuple[SegmentTemplate, ...]:
        return self.segments[:-1]

    @property
    def sources(self) -> tuple[str, ...]:
        """The sample fields a sample of this task must hold."""
        return tuple(dict.fromkeys(s.source for s in self.segments))


# --------------------------------------------------------------------------- loading
class _UniqueKeyLoader(yaml.SafeLoader):
    """A SafeLoader that refuses a mapping with a key twice (PyYAML keeps the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise TemplateError(f"line {key_node.start_mark.line + 1}: key {key!r} appears twice")
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_templates(
    source: str | os.PathLike | Mapping[str, Any] | None = None,
    *,
    modalities: Iterable[str] = MODALITIES,
) -> dict[str, TaskTemplate]:
    """Read and validate task templates.

    Args:
        source: a YAML file, an already-parsed dict (``{"tasks": [...]}``), or None for
            ``recipes/lm/tasks.yaml`` of the repository.
        modalities: the modalities a segment may name (add one here after adding its
            range to the vocabulary).

    Returns:
        task name -> template, in file order.

    Raises:
        TemplateError: naming the file, task and field: unknown modality, no target, two
            targets, target not last, duplicate task or segment name, unknown field, ...
    """
    if source is None:
        source = DEFAULT_TEMPLATES
        if not source.is_file():
            raise FileNotFoundError(
                f"{source} not found: the default task templates live in the repository's "
                "recipes/; pass the path of a tasks.yaml"
            )
    if isinstance(source, Mapping):
        where, data = "<dict>", source
    else:
        where = str(source)
        try:
            data = yaml.load(Path(source).read_text(), Loader=_UniqueKeyLoader)
        except TemplateError as err:
            raise TemplateError(f"{where}: {err}") from None
        except yaml.YAMLError as err:
            raise TemplateError(f"{where}: not valid YAML: {err}") from None
    if not isinstance(data, Mapping) or not isinstance(data.get("tasks"), list):
        raise TemplateError(f"{where}: expected a mapping with a `tasks:` list of task entries")
    extra = sorted(set(data) - {"tasks"})
    if extra:
        raise TemplateError(f"{where}: unknown top-level keys {extra} (only `tasks`)")
    modalities = tuple(modalities)
    templates: dict[str, TaskTemplate] = {}
    first_seen: dict[str, int] = {}
    for index, entry in enumerate(data["tasks"]):
        task = _task(entry, index, where, modalities)
        if task.name in templates:
            raise TemplateError(
                f"{where}: task {task.name!r} is defined twice (tasks {first_seen[task.name]} and {index})"
            )
        first_seen[task.name] = index
        templates[task.name] = task
    if not templates:
        raise TemplateError(f"{where}: no tasks")
    return templates


def _task(entry: Any, index: int, where: str, modalities: tuple[str, ...]) -> TaskTemplate:
    if not isinstance(entry, Mapping):
        raise TemplateError(f"{where}: task {index} must be a mapping, got {entry!r}")
    name = entry.get("name")
    label = f"{where}: task {name!r}" if name is not None else f"{where}: task {index}"
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TemplateError(
            f"{label}: `name` must be a lowercase identifier (e.g. tts), got {name!r}"
        )
    extra = sorted(set(entry) - {"name", "segments", "description"})
    if extra:
        raise TemplateError(
            f"{label}: unknown fields {extra} (fields: name, segments, description)"
        )
    description = entry.get("description", "")
    if not isinstance(description, str):
        raise TemplateError(f"{label}: `description` must be a string")
    raw = entry.get("segments")
    if not isinstance(raw, list) or not raw:
        raise TemplateError(f"{label}: `segments` must be a non-empty list")
    segments = tuple(_segment(s, i, label, modalities) for i, s in enumerate(raw))
    names = [s.name for s in segments]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TemplateError(f"{label}: segment names must differ, {duplicates} appear twice")
    targets = [i for i, s in enumerate(segments) if s.target]
    if not targets:
        raise TemplateError(f"{label}: no target segment (mark the last segment `target: true`)")
    if len(targets) > 1:
        raise TemplateError(
            f"{label}: {len(targets)} target segments {[names[i] for i in targets]}; "
            "exactly one (the last) may be the target"
        )
    if targets[0] != len(segments) - 1:
        raise TemplateError(
            f"{label}: target segment {names[targets[0]]!r} must be the last segment "
            f"(it is segment {targets[0]} of {len(segments)})"
        )
    target = segments[-1]
    if target.modality == EMBEDDING or target.masked:
        raise TemplateError(
            f"{label}: target segment {target.name!r} must hold tokens the model can predict "
            "(not an embedding, not masked)"
        )
    return TaskTemplate(name, segments, description)


def _segment(entry: Any, index: int, label: str, modalities: tuple[str, ...]) -> SegmentTemplate:
    if not isinstance(entry, Mapping):
        raise TemplateError(f"{label}, segment {index}: must be a mapping, got {entry!r}")
    name = entry.get("name")
    where = (
        f"{label}, segment {index} ({name!r})" if name is not None else f"{label}, segment {index}"
    )
    missing = [k for k in _REQUIRED if k not in entry]
    if missing:
        raise TemplateError(f"{where}: missing field(s) {missing} (required: {list(_REQUIRED)})")
    extra = sorted(set(entry) - set(_REQUIRED) - set(_OPTIONAL))
    if extra:
        raise TemplateError(
            f"{where}: unknown field(s) {extra} (fields: {[*_REQUIRED, *_OPTIONAL]})"
        )
    for key in _REQUIRED:
        if not isinstance(entry[key], str) or not entry[key]:
            raise TemplateError(f"{where}: `{key}` must be a non-empty string, got {entry[key]!r}")
    if not _NAME.fullmatch(name):
        raise TemplateError(f"{where}: `name` must be a lowercase identifier, got {name!r}")
    modality = entry["modality"]
    if modality not in modalities:
        raise TemplateError(f"{where}: unknown modality {modality!r} (known: {list(modalities)})")
    target, masked = entry.get("target", False), entry.get("masked", False)
    for key, value in (("target", target), ("masked", masked)):
        if not isinstance(value, bool):
            raise TemplateError(f"{where}: `{key}` must be true or false, got {value!r}")
    max_seconds = entry.get("max_seconds")
    if max_seconds is not None:
        if (
            isinstance(max_seconds, bool)
            or not isinstance(max_seconds, (int, float))
            or max_seconds <= 0
        ):
            raise TemplateError(
                f"{where}: `max_seconds` must be a positive number, got {max_seconds!r}"
            )
        max_seconds = float(max_seconds)
    if (max_seconds is not None or masked) and modality != CODEC:
        raise TemplateError(f"{where}: `max_seconds` and `masked` apply to codec segments only")
    return SegmentTemplate(
        name, modality, entry["tokenizer"], entry["source"], target, max_seconds, masked
    )


# --------------------------------------------------------------------------- vocabulary
def vocabulary_for(
    templates: Mapping[str, TaskTemplate] | Iterable[TaskTemplate],
    codec: CodecInfo,
    modality_sizes: Mapping[str, int] | None = None,
    *,
    metadata: Mapping[str, Mapping[str, Any]] | None = None,
    base: Vocabulary | None = None,
) -> Vocabulary:
    """The vocabulary whose tasks and segment markers are those of the templates.

    Args:
        templates: task templates (as :func:`load_templates` returns them).
        codec: the codec whose codes the sequences hold.
        modality_sizes: number of values of every token modality the templates use
            (``{"phone": 72, "midi": 128, "text": 256, "semantic": 500}``); sizes of
            modalities no template uses are allocated too. Allocated in this order, after
            the codec.
        metadata: modality -> opaque JSON dict (e.g. the phone set per language).
        base: an existing vocabulary to grow instead of building a new one: whatever the
            templates need and it lacks is appended (:meth:`Vocabulary.extend`), no id moves;
            returned unchanged if it holds everything.

    Raises:
        ValueError: a template uses a modality without a size, or ``base`` has another codec.
    """
    tasks = list(templates.values()) if isinstance(templates, Mapping) else list(templates)
    sizes = dict(modality_sizes or {})
    for task in tasks:
        for seg in task.segments:
            known = base is not None and seg.modality in base.modalities
            if seg.modality not in (CODEC, EMBEDDING) and seg.modality not in sizes and not known:
                raise ValueError(
                    f"task {task.name!r}, segment {seg.name!r} uses modality {seg.modality!r}: "
                    "give its size in modality_sizes"
                )
    task_names = [t.name for t in tasks]
    segment_names = list(dict.fromkeys(s.name for t in tasks for s in t.segments))
    if base is None:
        return Vocabulary.build(
            codec, sizes, tasks=task_names, segments=segment_names, metadata=metadata
        )
    if base.codec != codec:
        raise ValueError(
            f"base vocabulary {base.hash} holds codes of codec {base.codec}, not {codec}"
        )
    return base.extend(
        tasks=task_names, segments=segment_names, modalities=sizes, metadata=metadata
    )
