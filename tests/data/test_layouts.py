import json

import soundfile as sf

from lit_codec.data.corpus import detect_layout, discover
from lit_codec.data.prepare import PrepareSettings, prepare_shards

from .corpus_factory import tone
from .test_make_audio_shards import read_shards


def _wav(path, seconds=1.0, rate=24000, seed=0, fmt="WAV"):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, tone(seconds, rate, seed=seed), rate, format=fmt)


def make_libritts(root):
    for spk, chapter in (("19", "198"), ("84", "121123")):
        for n in range(2):
            utt = f"{spk}_{chapter}_000{n}_00000{n}"
            d = root / "train-clean-100" / spk / chapter
            _wav(d / f"{utt}.wav", seed=n)
            (d / f"{utt}.normalized.txt").write_text(f"Normalized text {spk} {n}.")
            (d / f"{utt}.original.txt").write_text(f"ORIGINAL text {spk} {n}")
    return 4


def make_vctk(root):
    root.mkdir(parents=True, exist_ok=True)
    (root / "speaker-info.txt").write_text(
        "ID  AGE  GENDER  ACCENTS  REGION\np225  23  F    English    Southern  England\np226  22  M  English  Surrey\n"
    )
    for spk in ("p225", "p226"):
        for n in (1, 2):
            for mic in ("mic1", "mic2"):
                _wav(
                    root / "wav48_silence_trimmed" / spk / f"{spk}_00{n}_{mic}.flac",
                    rate=48000,
                    fmt="FLAC",
                    seed=n,
                )
            (root / "txt" / spk).mkdir(parents=True, exist_ok=True)
            (root / "txt" / spk / f"{spk}_00{n}.txt").write_text(f"Please call Stella {spk} {n}.\n")
    return 4


def make_ljspeech(root):
    lines = []
    for n in range(1, 4):
        _wav(root / "wavs" / f"LJ001-000{n}.wav", rate=22050, seed=n)
        lines.append(f"LJ001-000{n}|Raw text {n} Dr.|Normalized text {n} Doctor.")
    (root / "metadata.csv").write_text("\n".join(lines) + "\n")
    return 3


def test_layouts_are_detected(tmp_path):
    make_libritts(tmp_path / "libritts")
    make_vctk(tmp_path / "vctk")
    make_ljspeech(tmp_path / "lj")
    (tmp_path / "plain").mkdir()
    assert detect_layout(tmp_path / "libritts") == "libritts"
    assert detect_layout(tmp_path / "vctk") == "vctk"
    assert detect_layout(tmp_path / "lj") == "ljspeech"
    assert detect_layout(tmp_path / "plain") == "folder"


def _prepared(tmp_path, root, layout, **settings):
    out = tmp_path / f"out_{layout}"
    result = prepare_shards(
        [root],
        out,
        PrepareSettings(all_to="train", **settings),
        layout=layout,
        progress=False,
        workers=1,
    )
    return result, [meta for meta, _, _ in read_shards(out).values()]


def test_libritts_takes_normalized_text_and_speaker(tmp_path):
    n = make_libritts(tmp_path / "LibriTTS_R")
    result, metas = _prepared(tmp_path, tmp_path / "LibriTTS_R", "libritts")
    assert result.files_used == n == len(metas)
    texts = {m["speaker"]: m["text"] for m in metas}
    assert texts["19"].startswith("Normalized text 19") and set(texts) == {"19", "84"}
    assert all(m["language"] == "en" for m in metas)


def test_vctk_takes_mic1_transcripts_and_speaker_info(tmp_path):
    n = make_vctk(tmp_path / "VCTK")
    result, metas = _prepared(tmp_path, tmp_path / "VCTK", "vctk")
    assert len(metas) == n  # mic2 duplicates left out
    m = sorted(metas, key=lambda m: m["source"])[0]
    assert m["speaker"] == "p225" and m["text"] == "Please call Stella p225 1."
    assert m["extra"]["gender"] == "F" and m["orig_sample_rate"] == 48000
    assert "mic1" in m["source"]


def test_ljspeech_takes_normalized_column(tmp_path):
    n = make_ljspeech(tmp_path / "LJSpeech-1.1")
    _, metas = _prepared(tmp_path, tmp_path / "LJSpeech-1.1", "ljspeech")
    assert len(metas) == n
    assert {m["text"] for m in metas} == {f"Normalized text {i} Doctor." for i in (1, 2, 3)}
    assert {m["speaker"] for m in metas} == {"LJ"}


def test_manifests_csv_tsv_jsonl(tmp_path):
    audio = tmp_path / "audio"
    for i in range(3):
        _wav(audio / f"{i}.wav", seed=i)
    rows = [(f"audio/{i}.wav", f"text {i}", f"s{i}", "fr") for i in range(3)]
    (tmp_path / "m.csv").write_text(
        "path,text,speaker,language,license\n"
        + "".join(f"{p},{t},{s},{lang},CC0\n" for p, t, s, lang in rows)
    )
    (tmp_path / "m.tsv").write_text(
        "audio_filepath\ttranscript\tspeaker_id\n"
        + "".join(f"{p}\t{t}\t{s}\n" for p, t, s, _ in rows)
    )
    (tmp_path / "m.jsonl").write_text(
        "".join(
            json.dumps({"audio": p, "text": t, "speaker": s, "lang": lang}) + "\n"
            for p, t, s, lang in rows
        )
    )
    for name in ("m.csv", "m.tsv", "m.jsonl"):
        found = discover([tmp_path / name])
        assert found.layouts == ["manifest"] and not found.skipped
        assert [i.text for i in found.inputs] == ["text 0", "text 1", "text 2"]
        assert [i.speaker for i in found.inputs] == ["s0", "s1", "s2"]
    csv_inputs = discover([tmp_path / "m.csv"]).inputs
    assert csv_inputs[0].language == "fr" and csv_inputs[0].extra == {"license": "CC0"}
    _, metas = _prepared(tmp_path, tmp_path / "m.jsonl", "manifest")
    assert sorted(m["text"] for m in metas) == ["text 0", "text 1", "text 2"]


def test_manifest_with_missing_file_reports_it(tmp_path):
    _wav(tmp_path / "a.wav")
    (tmp_path / "m.csv").write_text("path\na.wav\nmissing.wav\n")
    result, metas = _prepared(tmp_path, tmp_path / "m.csv", "manifest")
    assert len(metas) == 1
    assert [e["reason"] for e in result.skipped] == ["unreadable path"]
    assert result.skipped[0]["path"].endswith("missing.wav")


def test_split_by_speaker_keeps_each_speaker_in_one_split(tmp_path):
    for spk in range(20):
        for n in range(2):
            _wav(tmp_path / "c" / f"{spk}_{n}.wav", rate=16000, seed=n)
    (tmp_path / "m.csv").write_text(
        "path,speaker\n"
        + "".join(f"c/{spk}_{n}.wav,spk{spk}\n" for spk in range(20) for n in range(2))
    )
    out = tmp_path / "o"
    result = prepare_shards(
        [tmp_path / "m.csv"],
        out,
        PrepareSettings(valid_fraction=0.2, test_fraction=0.2),
        progress=False,
        workers=1,
    )
    assert result.split_by == "speaker"
    splits_of = {}
    for meta, _, _ in read_shards(out).values():
        splits_of.setdefault(meta["speaker"], set()).add(meta["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert {next(iter(s)) for s in splits_of.values()} == {"train", "valid", "test"}
