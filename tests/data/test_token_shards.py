"""make_token_shards: audio shards + a tiny codec -> token shards for se, tse, dereverb, tts."""

from __future__ import annotations

import importlib.util
import io
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from lit_codec.data.token_shards import TokenShardSettings, make_token_shards
from lit_codec.lm.sequence import build_sequence
from lit_codec.lm.templates import load_templates
from lit_codec.lm.vocab import Vocabulary

from .token_factory import RATE, export_tiny_codec, make_audio_shards

REPO = Path(__file__).resolve().parents[2]
HAS_PHONES = all(importlib.util.find_spec(m) for m in ("phonemizer", "espeakng_loader"))
NO_PHONES = "tts needs PhoneTokenizer: pip install phonemizer espeakng-loader"
HAS_MIDI = HAS_PHONES and importlib.util.find_spec("mido") is not None
NO_MIDI = "svs needs PhoneTokenizer and MidiTokenizer: pip install phonemizer espeakng-loader mido"
TASKS = ("se", "tse", "dereverb", *(("tts",) if HAS_PHONES else ()))
HOP = 8  # the tiny SEANet codec's


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> tuple[Path, Path]:
    """8 kHz audio shards (3 speakers in train, 1 in valid, 5 samples a shard) and a codec."""
    root = tmp_path_factory.mktemp("token_corpus")
    audio = make_audio_shards(root, valid_fraction=0.25, split_by="speaker")
    return audio, export_tiny_codec(root / "tiny.safetensors")


@pytest.fixture(scope="module")
def settings(corpus, tmp_path_factory) -> TokenShardSettings:
    audio, codec = corpus
    out = tmp_path_factory.mktemp("tokens") / "reference"
    return TokenShardSettings(
        str(audio),
        str(out),
        codec=str(codec),
        tasks=TASKS,
        shard_max_samples=4,
        workers=1,
        progress=False,
    )


@pytest.fixture(scope="module")
def reference(settings):
    """The token shards of one uninterrupted run with one worker."""
    return make_token_shards(settings)


def read_samples(out: Path) -> list[tuple[dict, dict[str, np.ndarray]]]:
    """Every sample of every split, read with plain webdataset and numpy."""
    import webdataset as wds

    index = json.loads((out / "index.json").read_text())
    urls = [str(out / s) for info in index["splits"].values() for s in info["shards"]]
    samples = []
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["json"])
        fields = {
            k[: -len(".npy")]: np.load(io.BytesIO(v))
            for k, v in sample.items()
            if k.endswith(".npy")
        }
        samples.append((meta, fields))
    return samples


def short(key: str) -> str:
    """``spk0_utt1`` of a sample key."""
    return key.split("_corpus_")[-1][:9]


def shard_bytes(out: Path) -> dict[str, bytes]:
    names = [*sorted(p.name for p in out.glob("*.tar")), "index.json", "report.json"]
    return {name: (out / name).read_bytes() for name in names}


def test_shards_hold_int16_codes_of_every_sample_and_the_fields_of_its_tasks(reference, settings):
    out = Path(settings.output)
    samples = read_samples(out)
    index = json.loads((out / "index.json").read_text())
    assert (
        reference.complete and len(samples) == reference.samples_out == reference.samples_in == 12
    )
    assert set(index["splits"]) == {"train", "valid"}
    assert sum(s["num_samples"] for s in index["splits"].values()) == 12
    templates = load_templates()
    for meta, fields in samples:
        codes = fields["codes"]
        assert codes.dtype == np.int16 and codes.shape == (math.ceil(meta["num_samples"] / HOP), 3)
        assert meta["frames"] == len(codes) and meta["duration"] == meta["num_samples"] / RATE
        assert {"key", "speaker", "language", "text", "tasks"} <= set(meta)
        needed = {f for t in meta["tasks"] for f in templates[t].sources}
        assert set(fields) == needed == set(meta["fields"])
        for name in ("noisy_codes", "mixture_codes", "reverberant_codes"):
            if name in fields:  # aligned with the clean codes
                assert fields[name].shape == codes.shape and fields[name].dtype == np.int16
        if "prompt_codes" in fields:
            prompt = meta["pairs"]["prompt"]
            assert prompt["key"] != meta["key"] and prompt["seconds"] <= 3.0
            assert len(fields["prompt_codes"]) == math.ceil(prompt["seconds"] * RATE / HOP)
    by_split = {m["key"]: m["split"] for m, _ in samples}
    valid_tasks = {t for m, _ in samples if m["split"] == "valid" for t in m["tasks"]}
    assert "tse" not in valid_tasks  # one speaker in valid: no interferer
    assert len(by_split) == 12


def test_index_vocabulary_and_every_task_builds_a_sequence(reference, settings):
    out = Path(settings.output)
    index = json.loads((out / "index.json").read_text())
    vocab = Vocabulary.from_schema(index["vocabulary"])
    assert vocab.hash == index["vocab_hash"] == index["vocabulary"]["hash"] == reference.vocab_hash
    assert vocab.codec.n_q == 3 and vocab.codec.sample_rate == RATE
    templates = load_templates()
    in_file_order = sorted(TASKS, key=list(templates).index)  # whatever the order asked
    assert index["tasks"] == in_file_order and list(vocab.tasks) == in_file_order
    if HAS_PHONES:
        assert vocab.metadata["phone"]["kind"] == "phones"
    built = dict.fromkeys(TASKS, 0)
    for meta, fields in read_samples(out):
        for task in meta["tasks"]:
            seq = build_sequence(vocab, templates[task], fields)
            assert seq.target.frames == meta["frames"]
            built[task] += 1
    assert built == reference.served and all(built.values())
    assert built["se"] == built["dereverb"] == 12


@pytest.mark.skipif(not HAS_PHONES, reason=NO_PHONES)
def test_tts_sample_without_transcript_is_reported_and_the_others_kept(reference, settings):
    report = json.loads((Path(settings.output) / "report.json").read_text())
    entries = {(short(e["key"]), e["task"]): e for e in report["skipped"]}
    no_text = entries[("spk0_utt1", "tts")]
    assert no_text["reason"] == "no transcript" and no_text["kept"] is True
    assert entries[("spk1_utt2", "tts")]["reason"] == "unsupported language"
    assert "'xx'" in entries[("spk1_utt2", "tts")]["detail"]
    assert reference.served["tts"] == 10 and reference.samples_out == 12  # both still serve se
    assert report["samples_dropped"] == 0 and report["by_task"]["tts"]["served"] == 10
    for meta, fields in read_samples(Path(settings.output)):
        if "tts" in meta["tasks"]:
            assert fields["phones"].dtype == np.int16 and len(fields["phones"]) > 3


@pytest.mark.skipif(not HAS_MIDI, reason=NO_MIDI)
def test_svs_sample_with_unreadable_midi_is_reported(settings, tmp_path):
    out = tmp_path / "svs"
    result = make_token_shards(replace(settings, output=str(out), tasks=("svs",)))
    entries = {short(e["key"]): e for e in result.skipped}
    broken = entries["spk2_utt0"]
    assert broken["task"] == "svs" and broken["reason"] == "unreadable MIDI"
    assert "broken.mid" in broken["detail"] and broken["kept"] is False  # svs was its only task
    assert {entries[k]["reason"] for k in ("spk0_utt1", "spk1_utt2")} == {
        "no transcript",
        "unsupported language",
    }
    assert result.served == {"svs": 9} and result.samples_out == 9
    vocab = Vocabulary.from_schema(json.loads((out / "index.json").read_text())["vocabulary"])
    template = load_templates()["svs"]
    for meta, fields in read_samples(out):
        assert fields["midi"].dtype == np.int16 and len(fields["midi"]) == meta["frames"]
        assert fields["midi"].max() > 0  # the notes, not only rests
        build_sequence(vocab, template, fields)


def test_codec_at_another_rate_is_refused_before_any_work(corpus, tmp_path, capsys):
    _, codec = corpus
    audio16 = make_audio_shards(tmp_path, rate=16000)
    spec = importlib.util.spec_from_file_location(
        "make_token_shards", REPO / "data_prep" / "make_token_shards.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = tmp_path / "tokens"
    argv = [
        "--input",
        str(audio16),
        "--codec",
        str(codec),
        "--tasks",
        "se",
        "--output",
        str(out),
        "--no-progress",
    ]
    assert script.main(argv) == 2
    err = capsys.readouterr().err
    assert "8000 Hz" in err and "16000 Hz" in err
    assert not out.exists()
    assert script.main([*argv[:5], "se,nope", *argv[6:]]) == 2
    assert "unknown task" in capsys.readouterr().err


def test_killed_run_resumes_to_identical_bytes(reference, settings, tmp_path):
    out = tmp_path / "resumed"
    partial = replace(settings, output=str(out), max_shards=1)
    assert not make_token_shards(partial).complete  # killed after one shard
    assert not (out / "index.json").exists() and len(list(out.glob("*.tar"))) == 1
    make_token_shards(partial)  # a second shard, then killed between its ledger and its rename
    second = sorted(out.glob("*.tar"))[1]
    second.rename(second.with_name(second.name + ".tmp"))
    (out / "valid-000000.tar.tmp").write_bytes(b"half a shard")  # killed while writing
    resumed = make_token_shards(replace(settings, output=str(out)))
    assert resumed.complete and not list(out.glob("*.tmp"))
    assert shard_bytes(out) == shard_bytes(Path(settings.output))
    with pytest.raises(RuntimeError, match="--overwrite"):
        make_token_shards(replace(settings, output=str(out), pairs=replace(settings.pairs, seed=1)))


def test_workers_do_not_change_the_bytes(reference, settings, tmp_path):
    out = tmp_path / "two_workers"
    result = make_token_shards(replace(settings, output=str(out), workers=2))
    assert result.complete and shard_bytes(out) == shard_bytes(Path(settings.output))
