"""Task templates: the shipped twelve build sequences, a new task needs YAML alone, bad YAML is named."""

import json

import numpy as np
import pytest
import yaml

from lit_codec.lm import (
    DEFAULT_TEMPLATES,
    CodecInfo,
    MissingSampleField,
    TemplateError,
    build_sequence,
    describe_sequence,
    load_templates,
    vocabulary_for,
)

# 4 frames/s: a 3 s prompt is 12 frames
CODEC = CodecInfo("tiny0123", sample_rate=16000, frame_rate=4, n_q=3, codebook_size=8)
SIZES = {"phone": 6, "midi": 5, "text": 7, "semantic": 9}
TEMPLATES = load_templates()
VOCAB = vocabulary_for(TEMPLATES, CODEC, SIZES)
TASKS = (
    "tts",
    "vc",
    "se",
    "tse",
    "svs",
    "tta",
    "ttm",
    "audio_edit",
    "dereverb",
    "instruct_tts",
    "speech_edit",
    "inpaint",  # ours, after UniAudio's eleven
)


def random_sample(template, rng, frames=20):
    """A sample with every field the template reads: codes (frames, n_q), tokens (T,), vectors (T, D)."""
    sample = {}
    for seg in template.segments:
        if seg.modality == "codec":
            codes = rng.integers(0, CODEC.codebook_size, (frames, CODEC.n_q))
            if seg.masked:
                codes[5:9] = -1  # the span to re-generate
            sample[seg.source] = codes
        elif seg.modality == "embedding":
            sample[seg.source] = rng.standard_normal((4, 5)).astype(np.float32)
        else:
            sample[seg.source] = rng.integers(0, SIZES[seg.modality], int(rng.integers(1, 6)))
    return sample


def test_the_shipped_file_holds_the_eleven_uniaudio_tasks_and_inpaint():
    assert DEFAULT_TEMPLATES.name == "tasks.yaml" and tuple(TEMPLATES) == TASKS
    for task in TEMPLATES.values():
        assert (
            task.target.target and task.target.modality == "codec" and task.target.source == "codes"
        )
        assert not any(s.target for s in task.conditions)
    assert [s.name for s in TEMPLATES["tts"].segments] == ["phone", "prompt", "audio"]
    assert TEMPLATES["tts"].segments[1].max_seconds == 3
    assert [s.modality for s in TEMPLATES["svs"].segments] == ["phone", "midi", "codec", "codec"]
    assert TEMPLATES["speech_edit"].segments[1].masked
    assert (
        TEMPLATES["inpaint"].sources == ("masked_codes", "codes")
        and TEMPLATES["inpaint"].segments[0].masked
    )
    assert TEMPLATES["tse"].sources == ("mixture_codes", "prompt_codes", "codes")
    assert set(VOCAB.tasks) == set(TASKS)


@pytest.mark.parametrize("task", TASKS)
def test_every_shipped_template_builds_a_sequence(task):
    template = TEMPLATES[task]
    rng = np.random.default_rng(0)
    sample = random_sample(template, rng)
    seq = build_sequence(VOCAB, template, sample)
    n_q, pad = CODEC.n_q, VOCAB.pad_id
    assert seq.task == task and seq.continuous is None
    assert seq.ids.dtype == np.int64 and seq.ids.shape == seq.mask.shape == seq.loss_mask.shape
    assert seq.ids.shape == (3 + sum(s.frames + 2 for s in seq.segments), n_q)
    assert [s.name for s in seq.segments] == [s.name for s in template.segments]
    assert seq.ids[0, 0] == VOCAB.special("<start>") and seq.ids[1, 0] == VOCAB.task_id(task)
    assert seq.ids[-1, 0] == VOCAB.special("<end>")
    assert (seq.ids[~seq.mask] == pad).all() and seq.mask[:, 0].all()
    expected_loss = np.zeros_like(seq.mask)
    for span, seg in zip(seq.segments, template.segments):
        start_id, end_id = VOCAB.segment_ids(seg.name)
        assert seq.ids[span.start - 1, 0] == start_id and seq.ids[span.stop, 0] == end_id
        content = seq.ids[span.start : span.stop]  # (frames, n_q)
        if seg.modality == "codec":
            codes = sample[seg.source]
            keep = (
                len(codes) if seg.max_seconds is None else int(seg.max_seconds * CODEC.frame_rate)
            )
            assert span.frames == min(keep, len(codes))
            if seg.masked:
                hidden = (codes < 0).all(axis=1)
                assert (content[hidden, 0] == VOCAB.special("<mask>")).all()
                assert not seq.mask[span.start : span.stop][hidden, 1:].any()
                np.testing.assert_array_equal(
                    VOCAB.codes_from_ids(content[~hidden]), codes[~hidden]
                )
            else:
                assert seq.mask[span.start : span.stop].all()
                np.testing.assert_array_equal(VOCAB.codes_from_ids(content), codes[: span.frames])
        else:
            assert not seq.mask[span.start : span.stop, 1:].any()
            decoded = VOCAB.decode(content[:, 0])
            assert [d.value for d in decoded] == sample[seg.source].tolist()
            assert {d.modality for d in decoded} <= {seg.modality}
        assert span.target == seg.target
        if seg.target:
            expected_loss[span.start : span.stop] = seq.mask[span.start : span.stop]
            expected_loss[span.stop, 0] = True  # <audio_end>
    expected_loss[-1, 0] = True  # <end>
    np.testing.assert_array_equal(seq.loss_mask, expected_loss)
    assert seq.target.name == template.target.name and not seq.loss_mask[seq.target.start - 1].any()
    summary = describe_sequence(VOCAB, seq, first=4)
    assert json.loads(json.dumps(summary)) == summary
    assert (
        summary["task"] == task
        and summary["frames"] == len(seq)
        and summary["prefix"][1] == VOCAB.task_id(task)
    )
    assert [s["frames"] for s in summary["segments"]] == [s.frames for s in seq.segments]
    assert summary["segments"][-1]["first_ids"] == seq.ids[seq.target.start, :].tolist() + [
        seq.ids[seq.target.start + 1, 0]
    ]


def test_a_long_prompt_is_cropped_to_max_seconds_at_a_random_offset():
    template = TEMPLATES["tts"]
    sample = random_sample(template, np.random.default_rng(1), frames=40)
    prompt = sample["prompt_codes"]
    first = build_sequence(VOCAB, template, sample)
    span = first.segments[1]
    assert span.frames == 12  # 3 s at 4 frames/s
    np.testing.assert_array_equal(
        VOCAB.codes_from_ids(first.ids[span.start : span.stop]), prompt[:12]
    )
    cropped = build_sequence(VOCAB, template, sample, rng=np.random.default_rng(3))
    window = VOCAB.codes_from_ids(cropped.ids[span.start : span.stop])
    offsets = [o for o in range(29) if (prompt[o : o + 12] == window).all()]
    assert offsets and offsets != [0]


def test_a_new_task_needs_only_a_yaml_entry(tmp_path):
    text = DEFAULT_TEMPLATES.read_text() + (
        "  - name: tta_t5\n"
        "    description: text-to-sound on T5 embeddings\n"
        "    segments:\n"
        "      - {name: caption, modality: embedding, tokenizer: text_t5, source: caption_embedding}\n"
        "      - {name: audio, modality: codec, tokenizer: codec, source: codes, target: true}\n"
    )
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    templates = load_templates(path)
    assert list(templates)[-1] == "tta_t5"
    vocab = vocabulary_for(templates, CODEC, SIZES)
    sample = random_sample(templates["tta_t5"], np.random.default_rng(2))
    seq = build_sequence(vocab, templates["tta_t5"], sample)
    caption = seq.segments[0]
    assert seq.continuous.shape == (len(seq), 5)
    np.testing.assert_array_equal(
        seq.continuous[caption.start : caption.stop], sample["caption_embedding"]
    )
    assert not seq.continuous[: caption.start].any() and not seq.continuous[caption.stop :].any()
    assert (seq.ids[caption.start : caption.stop, 0] == vocab.special("<embedding>")).all()
    # grown from the shipped vocabulary instead: appended, nothing moved
    grown = vocabulary_for(templates, CODEC, SIZES, base=VOCAB)
    assert grown.version == 2 and grown.ranges[: len(VOCAB.ranges)] == VOCAB.ranges
    assert {k: grown.tasks[k] for k in VOCAB.tasks} == VOCAB.tasks
    assert grown.task_id("tta_t5") >= VOCAB.size
    assert vocabulary_for(TEMPLATES, CODEC, SIZES, base=VOCAB) is VOCAB
    build_sequence(grown, templates["tta_t5"], sample)


def test_a_sample_without_a_field_names_task_segment_and_field():
    sample = random_sample(TEMPLATES["svs"], np.random.default_rng(0))
    del sample["midi"]
    with pytest.raises(
        MissingSampleField, match=r"task 'svs', segment 'midi' reads sample field 'midi'"
    ):
        build_sequence(VOCAB, TEMPLATES["svs"], sample)
    with pytest.raises(KeyError):
        build_sequence(VOCAB, TEMPLATES["svs"], sample)


def test_bad_fields_and_foreign_vocabularies_are_named():
    template = TEMPLATES["vc"]
    sample = random_sample(template, np.random.default_rng(0))
    with pytest.raises(
        ValueError, match=r"task 'vc', segment 'semantic'.*semantic value 9 out of range"
    ):
        build_sequence(VOCAB, template, {**sample, "semantic": np.array([9])})
    with pytest.raises(ValueError, match=r"segment 'audio'.*\(frames, 3\)"):
        build_sequence(VOCAB, template, {**sample, "codes": np.zeros((4, 2), dtype=int)})
    small = vocabulary_for({"se": TEMPLATES["se"]}, CODEC, SIZES)
    with pytest.raises(KeyError, match="no task 'vc'.*vocabulary_for"):
        build_sequence(small, template, sample)
    with pytest.raises(ValueError, match="task 'svs', segment 'midi' uses modality 'midi'"):
        vocabulary_for(TEMPLATES, CODEC, {"phone": 6, "text": 7, "semantic": 9})


def _task(name="demo", **target):
    return {
        "name": name,
        "segments": [
            {"name": "phone", "modality": "phone", "tokenizer": "phone", "source": "phones"},
            {
                "name": "audio",
                "modality": "codec",
                "tokenizer": "codec",
                "source": "codes",
                "target": True,
                **target,
            },
        ],
    }


def _with_segment(index, **fields):
    task = _task()
    task["segments"][index] = {**task["segments"][index], **fields}
    return {"tasks": [task]}


@pytest.mark.parametrize(
    "data, message",
    [
        (
            _with_segment(0, modality="phones"),
            r"task 'demo', segment 0 \('phone'\): unknown modality 'phones'",
        ),
        (_with_segment(1, target=False), r"task 'demo': no target segment"),
        (_with_segment(0, target=True), r"task 'demo': 2 target segments \['phone', 'audio'\]"),
        (
            {"tasks": [{"name": "demo", "segments": _task()["segments"][::-1]}]},
            r"task 'demo': target segment 'audio' must be the last segment",
        ),
        (
            {"tasks": [_task("tts"), _task("vc"), _task("tts")]},
            r"task 'tts' is defined twice \(tasks 0 and 2\)",
        ),
        (
            _with_segment(0, max_seconds=3),
            r"segment 0 \('phone'\): `max_seconds` and `masked` apply to codec",
        ),
        (
            _with_segment(1, targett=True),
            r"segment 1 \('audio'\): unknown field\(s\) \['targett'\]",
        ),
        (
            _with_segment(0, source=None),
            r"segment 0 \('phone'\): `source` must be a non-empty string",
        ),
        (
            _with_segment(1, name="audio", modality="embedding"),
            r"target segment 'audio' must hold tokens",
        ),
        (
            {"tasks": [{"name": "Demo", "segments": []}]},
            r"task 'Demo': `name` must be a lowercase identifier",
        ),
        ({"task": []}, r"`tasks:` list"),
    ],
)
def test_bad_templates_are_refused_with_the_task_and_field(tmp_path, data, message):
    with pytest.raises(TemplateError, match=message):
        load_templates(data)
    path = tmp_path / "tasks.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(TemplateError, match=str(path)):
        load_templates(path)


def test_a_key_twice_in_the_yaml_is_refused(tmp_path):
    path = tmp_path / "tasks.yaml"
    path.write_text(
        "tasks:\n  - name: demo\n    segments:\n"
        "      - {name: audio, modality: codec, tokenizer: codec, source: codes, source: x, target: true}\n"
    )
    with pytest.raises(TemplateError, match=r"line 4: key 'source' appears twice"):
        load_templates(path)
