"""Codec language models: the shared vocabulary, the task templates and token sequences.

Plain Python, numpy and yaml (no Lightning): the data pipeline, the tokenizers and the
``lit-codec tokens`` command read the same layout the model is trained on.

- :mod:`lit_codec.lm.vocab`: :class:`Vocabulary`, versioned and append-only, with its
  JSON schema and hash.
- :mod:`lit_codec.lm.templates`: :class:`TaskTemplate` read from ``recipes/lm/tasks.yaml``
  and :func:`vocabulary_for`.
- :mod:`lit_codec.lm.sequence`: :func:`build_sequence` lays a sample out as
  ``<start> <task> <seg_start> ... <seg_end> ... <end>`` on a ``(frames, n_q)`` grid.
- :mod:`lit_codec.lm.generate`: :func:`generate` continues task prefixes with a trained
  network (KV caches, sampling, classifier-free guidance); it needs torch, imported on use.
"""

from __future__ import annotations

from lit_codec.lm.sequence import (
    MissingSampleField,
    SegmentSpan,
    TaskSequence,
    build_sequence,
    describe_sequence,
)
from lit_codec.lm.templates import (
    DEFAULT_TEMPLATES,
    MODALITIES,
    SegmentTemplate,
    TaskTemplate,
    TemplateError,
    load_templates,
    vocabulary_for,
)
from lit_codec.lm.vocab import (
    DEFAULT_SPECIALS,
    CodecInfo,
    DecodedToken,
    Range,
    UnknownName,
    Vocabulary,
    VocabularyMismatch,
    schema_hash,
)

__all__ = [
    "DEFAULT_SPECIALS",
    "DEFAULT_TEMPLATES",
    "MODALITIES",
    "CodecInfo",
    "DecodedToken",
    "MissingSampleField",
    "Range",
    "SegmentSpan",
    "SegmentTemplate",
    "TaskSequence",
    "TaskTemplate",
    "TemplateError",
    "UnknownName",
    "Vocabulary",
    "VocabularyMismatch",
    "build_sequence",
    "describe_sequence",
    "load_templates",
    "schema_hash",
    "vocabulary_for",
]
