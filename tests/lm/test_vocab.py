"""The codec LM vocabulary: ids never collide, round-trip, never move, and are checked by hash."""

import hashlib
import json
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from lit_codec.lm import CodecInfo, DecodedToken, UnknownName, Vocabulary, VocabularyMismatch

CODEC = CodecInfo("tiny0123", sample_rate=16000, frame_rate=50, n_q=3, codebook_size=8)
SIZES = {"phone": 5, "midi": 4, "text": 6, "semantic": 7}
PHONES = {"phone": {"languages": {"en": ["a", "b", "k", "s", "t"]}}}


def tiny(codec: CodecInfo = CODEC, sizes=SIZES) -> Vocabulary:
    return Vocabulary.build(
        codec, sizes, tasks=["tts", "vc"], segments=["phone", "prompt", "audio"], metadata=PHONES
    )


def all_token_ids(vocab: Vocabulary) -> list[int]:
    """Every id a name holds (specials, markers, tasks) plus every modality id."""
    ids = list(vocab.specials.values()) + list(vocab.tasks.values())
    ids += [i for pair in vocab.segments.values() for i in pair]
    for name in vocab.modalities:
        r = vocab.range(name)
        ids += range(r.start, r.stop)
    return ids


def test_layout_follows_the_reserved_ranges_in_order():
    vocab = tiny()
    assert [(r.name, r.kind) for r in vocab.ranges] == [
        ("specials", "special"), ("segments", "segment"), ("tasks", "task"), ("codec", "modality"),
        ("phone", "modality"), ("midi", "modality"), ("text", "modality"), ("semantic", "modality"),
    ]  # fmt: skip
    assert vocab.special("<pad>") == vocab.pad_id == 0
    assert vocab.special("start") == vocab.special("<start>") == 1
    assert vocab.range("specials").size == 32  # spare slots for later specials
    assert vocab.segment_ids("phone") == (32, 33) and vocab.task_id("tts") == 38
    assert vocab.range("codec").size == 3 * 8
    assert vocab.size == len(vocab) == vocab.range("semantic").stop
    assert vocab.codebook_range(1) == (
        vocab.range("codec").start + 8,
        vocab.range("codec").start + 16,
    )


def test_ids_never_collide_and_every_id_decodes_once():
    vocab = tiny()
    ids = all_token_ids(vocab)
    assert len(ids) == len(set(ids))
    starts = [r.start for r in vocab.ranges]
    assert starts == sorted(starts) and all(
        a.stop == b.start for a, b in zip(vocab.ranges, vocab.ranges[1:])
    )
    decoded = vocab.decode(np.array(sorted(ids)))
    assert len(set(decoded)) == len(ids)  # no two ids mean the same thing


def test_decode_of_encode_is_the_identity_for_every_modality_and_codebook():
    vocab = tiny()
    for modality, size in SIZES.items():
        values = np.arange(size)
        ids = vocab.encode(modality, values)
        assert ids.dtype == np.int64
        assert vocab.decode(ids) == [DecodedToken(modality, modality, None, v) for v in range(size)]
    q, code = np.meshgrid(np.arange(3), np.arange(8), indexing="ij")  # every (codebook, code)
    codes = code.T  # (8, 3): frame f holds code f in every codebook
    ids = vocab.codec_ids(codes)  # (8, 3)
    np.testing.assert_array_equal(vocab.encode("codec", codes), ids)
    assert ids.shape == (8, 3) and len(np.unique(ids)) == 24
    assert vocab.decode(ids) == [
        DecodedToken("codec", "codec", int(qq), int(cc))
        for qq, cc in zip(q.T.ravel(), codes.ravel())
    ]
    np.testing.assert_array_equal(vocab.codes_from_ids(ids), codes)
    for qq in range(3):  # column q lies in codebook q's slice
        lo, hi = vocab.codebook_range(qq)
        assert ((ids[:, qq] >= lo) & (ids[:, qq] < hi)).all()
    assert vocab.decode(np.array([vocab.task_id("vc"), vocab.segment_ids("audio")[1], 2])) == [
        DecodedToken("task", None, None, 1, "<vc_task>"),
        DecodedToken("segment", None, None, 5, "<audio_end>"),
        DecodedToken("special", None, None, 2, "<end>"),
    ]


def test_out_of_range_values_and_ids_are_refused():
    vocab = tiny()
    with pytest.raises(ValueError, match=r"phone value 5 out of range.*5 values"):
        vocab.encode("phone", np.array([0, 5]))
    with pytest.raises(ValueError, match=r"semantic value -1"):
        vocab.encode("semantic", np.array([-1]))
    with pytest.raises(ValueError, match=r"codec value 8 out of range"):
        vocab.codec_ids(np.array([[0, 8, 0]]))
    with pytest.raises(ValueError, match=r"\(frames, 3\)"):
        vocab.codec_ids(np.zeros((2, 4), dtype=int))
    with pytest.raises(TypeError, match="integers"):
        vocab.encode("phone", np.array([0.5]))
    with pytest.raises(ValueError, match="outside every range"):
        vocab.decode(np.array([vocab.size]))
    with pytest.raises(ValueError, match="reserved slot"):
        vocab.decode(np.array([20]))  # a spare special slot
    with pytest.raises(ValueError, match="not a code"):
        # codebook 1's first code in column 0
        vocab.codes_from_ids(np.array([[vocab.range("codec").start + 8, 0, 0]]))
    with pytest.raises(UnknownName, match="no modality 'f0'"):
        vocab.encode("f0", np.array([0]))
    with pytest.raises(KeyError, match="no task 'svs'.*extend"):
        vocab.task_id("svs")


def test_schema_round_trips_exactly_and_its_hash_is_stable(tmp_path):
    vocab = tiny()
    schema = vocab.schema()
    canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"))
    assert vocab.hash == hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert json.loads(json.dumps(schema)) == schema  # JSON-able
    assert schema["codec"] == {
        "fingerprint": "tiny0123", "sample_rate": 16000, "frame_rate": 50.0, "n_q": 3, "codebook_size": 8,
    }  # fmt: skip
    assert schema["metadata"] == PHONES and schema["tasks"] == {"tts": 38, "vc": 39}
    again = Vocabulary.from_schema(schema)
    assert again.schema() == schema and again.hash == vocab.hash == tiny().hash
    loaded = Vocabulary.load(vocab.save(tmp_path / "vocab.json"))
    assert loaded.schema() == schema and loaded.hash == vocab.hash
    assert json.loads((tmp_path / "vocab.json").read_text())["hash"] == vocab.hash
    # the layout is part of every saved model: changing it must be on purpose
    assert vocab.hash == "83773da97105e6e9"


def test_an_edited_schema_file_is_refused(tmp_path):
    path = tiny().save(tmp_path / "vocab.json")
    data = json.loads(path.read_text())
    data["tasks"]["tts"], data["tasks"]["vc"] = data["tasks"]["vc"], data["tasks"]["tts"]
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="does not match its content"):
        Vocabulary.load(path)


def test_a_mismatch_names_both_hashes_and_the_first_difference():
    vocab = tiny()
    vocab.check_compatible(tiny())
    vocab.check_compatible(json.loads(json.dumps({**vocab.schema(), "hash": vocab.hash})))
    other = tiny(CodecInfo("tiny0123", 16000, 50, n_q=4, codebook_size=8))
    with pytest.raises(VocabularyMismatch) as err:
        vocab.check_compatible(other)
    message = str(err.value)
    assert vocab.hash in message and other.hash in message
    assert "codec.n_q: 3 != 4" in message
    assert (err.value.expected, err.value.actual) == (vocab.hash, other.hash)
    bigger = tiny(sizes={**SIZES, "midi": 9})
    with pytest.raises(VocabularyMismatch, match=r"ranges\[5\]\.size: 4 != 9") as err:
        vocab.check_compatible(bigger.schema())
    assert vocab.hash in str(err.value) and bigger.hash in str(err.value)
    assert isinstance(err.value, ValueError)


def test_extend_bumps_the_version_and_never_moves_an_id():
    v1 = tiny()
    v2 = v1.extend(
        tasks=["tts", "svs"], segments=["midi"], modalities={"f0": 10, "phone": 5}, specials=["<sep>"],
        metadata={"f0": {"hz_per_bin": 20}},
    )  # fmt: skip
    v3 = v2.extend(tasks=["se"], segments=["noisy"])
    assert (v1.version, v2.version, v3.version) == (1, 2, 3)
    for old, new in ((v1, v2), (v2, v3), (v1, v3)):
        assert new.ranges[: len(old.ranges)] == old.ranges
        assert {k: new.specials[k] for k in old.specials} == old.specials
        assert {k: new.segments[k] for k in old.segments} == old.segments
        assert {k: new.tasks[k] for k in old.tasks} == old.tasks
        for modality, size in SIZES.items():
            np.testing.assert_array_equal(
                new.encode(modality, np.arange(size)), old.encode(modality, np.arange(size))
            )
        codes = np.arange(24).reshape(8, 3) % 8
        np.testing.assert_array_equal(new.codec_ids(codes), old.codec_ids(codes))
        with pytest.raises(VocabularyMismatch):
            new.check_compatible(old)
        new.check_extends(old)  # grew from it
        with pytest.raises(VocabularyMismatch, match="does not extend"):
            old.check_extends(new)
    v1.check_extends(v1)
    rebuilt = Vocabulary.build(CODEC, SIZES, tasks=["se", "tts"], segments=["noisy", "audio"])
    with pytest.raises(VocabularyMismatch, match="does not extend"):  # built anew: ids moved
        rebuilt.check_extends(tiny())
    assert v2.special("<sep>") < 32  # took a spare slot of the first specials range
    assert v2.task_id("svs") >= v1.size and min(v2.segment_ids("midi")) >= v1.size  # appended
    assert [r.name for r in v2.ranges[len(v1.ranges) :]] == ["segments.v2", "tasks.v2", "f0"]
    assert v3.task_id("se") >= v2.size
    assert Vocabulary.from_schema(v3.schema()).hash == v3.hash
    assert v3.extend(tasks=["tts"], segments=["noisy"]) is v3  # nothing new: unchanged
    with pytest.raises(ValueError, match="ids never move"):
        v1.extend(modalities={"phone": 6})
    with pytest.raises(ValueError, match="cannot change"):
        v1.extend(metadata={"phone": {"languages": {}}})


def test_metadata_belongs_to_a_modality_and_describe_shows_the_layout():
    with pytest.raises(ValueError, match="not a modality"):
        Vocabulary.build(CODEC, SIZES, metadata={"pitch": {}})
    text = tiny().describe()
    for needle in (
        tiny().hash,
        "version 1",
        "specials",
        "semantic",
        "16000 Hz",
        "3 codebooks x 8",
        "tts=38",
    ):
        assert needle in text, needle


def test_codec_info_reads_a_codec_and_normalises_types():
    codec = SimpleNamespace(
        fingerprint="abc", sample_rate=24000, frame_rate=75, n_q=8, codebook_size=1024
    )
    info = CodecInfo.from_codec(codec)
    assert info == CodecInfo("abc", 24000, 75.0, 8, 1024) and isinstance(info.frame_rate, float)
    with pytest.raises(ValueError, match="n_q"):
        CodecInfo("abc", 24000, 75, 0, 1024)


def test_the_lm_package_imports_no_lightning():
    code = "import sys, lit_codec.lm; assert 'lightning' not in sys.modules and 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
