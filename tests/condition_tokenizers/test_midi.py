"""MidiTokenizer: frames, pitches, rests, onsets of a MIDI file written with mido."""

from __future__ import annotations

import json

import numpy as np
import pytest

mido = pytest.importorskip("mido")

from lit_codec.tokenizers.midi import MidiError, MidiNote, MidiTokenizer  # noqa: E402

TPB = 480  # ticks per beat; 120 bpm: one beat = 0.5 s = 25 frames at 50 frames/s


def write_midi(path, events, tempo=500_000, extra_tracks=()):
    """events: (delta_ticks, type, note) on channel 0 of track 1; track 0 holds the tempo."""
    mid = mido.MidiFile(ticks_per_beat=TPB)
    meta = mido.MidiTrack([mido.MetaMessage("set_tempo", tempo=tempo, time=0)])
    track = mido.MidiTrack()
    for delta, kind, note in events:
        track.append(
            mido.Message(kind, note=note, velocity=0 if kind == "note_off" else 90, time=delta)
        )
    mid.tracks += [meta, track, *extra_tracks]
    mid.save(path)
    return path


def test_frames_pitches_rests_and_onsets(tmp_path):
    # C4 one beat, E4 one beat, rest one beat, E4 half beat twice (a repeated note)
    path = write_midi(
        tmp_path / "melody.mid",
        [
            (0, "note_on", 60), (480, "note_off", 60),
            (0, "note_on", 64), (480, "note_off", 64),
            (480, "note_on", 64), (240, "note_off", 64),
            (0, "note_on", 64), (240, "note_off", 64),
        ],
    )  # fmt: skip
    tok = MidiTokenizer(frame_rate=50)
    frames = tok.frames(path)
    assert len(frames) == 100  # 4 beats of 0.5 s at 50 frames/s
    np.testing.assert_array_equal(frames.pitch[:25], 60)
    np.testing.assert_array_equal(frames.pitch[25:50], 64)
    np.testing.assert_array_equal(frames.pitch[50:75], -1)
    np.testing.assert_array_equal(frames.pitch[75:], 64)
    assert np.flatnonzero(frames.onset).tolist() == [0, 25, 75, 88]  # the repeat is visible
    symbols = tok.symbols()
    shown = [symbols[i] for i in frames.ids[[0, 1, 50, 75, 87, 88]]]
    assert shown == ["on:60", "60", "<rest>", "on:64", "64", "on:64"]
    assert tok.vocab_size == len(symbols) == 257 and frames.ids.max() < tok.vocab_size
    notes = tok.notes_from_ids(frames.ids)
    expected = [(60, 0.0, 0.5), (64, 0.5, 1.0), (64, 1.5, 1.76), (64, 1.76, 2.0)]
    assert notes == [MidiNote(*n) for n in expected]
    np.testing.assert_array_equal(tok.encode(path, n_frames=120)[100:], 0)  # padded with rests
    assert len(tok.encode(path, n_frames=10)) == 10


def test_highest_note_wins_and_tempo_is_followed(tmp_path):
    # a chord C4+G4 for one beat at 60 bpm (1 s); drums on channel 9 ignored
    drums = mido.MidiTrack([mido.Message("note_on", channel=9, note=100, velocity=90, time=0),
                            mido.Message("note_off", channel=9, note=100, time=960)])  # fmt: skip
    path = write_midi(
        tmp_path / "chord.mid",
        [(0, "note_on", 60), (0, "note_on", 67), (480, "note_off", 67), (0, "note_off", 60)],
        tempo=1_000_000,
        extra_tracks=[drums],
    )
    frames = MidiTokenizer(frame_rate=10).frames(path)
    assert frames.pitch[:10].tolist() == [67] * 10  # 1 s of G4 at 10 frames/s
    assert (frames.pitch[10:] == -1).all()  # the drum track runs to 2 s: rests
    with_drums = MidiTokenizer(frame_rate=10, drums=True).frames(path)
    assert with_drums.pitch[:20].tolist() == [100] * 20
    melody_only = MidiTokenizer(frame_rate=10, drums=True, tracks=[1]).frames(path)
    assert melody_only.pitch.tolist() == [67] * 10 + [-1] * 10
    with pytest.raises(MidiError, match="no track"):
        MidiTokenizer(tracks=[5]).encode(path)
    no_onsets = MidiTokenizer(frame_rate=10, onsets=False)
    assert no_onsets.vocab_size == 129 and no_onsets.encode(path)[0] == 1 + 67
    meta = no_onsets.metadata()
    assert json.loads(json.dumps(meta)) == meta and meta["kind"] == "midi"


def test_unreadable_midi_names_the_file(tmp_path):
    bad = tmp_path / "broken.mid"
    bad.write_bytes(b"this is not a MIDI file")
    with pytest.raises(MidiError, match="broken.mid"):
        MidiTokenizer().encode(bad)
    with pytest.raises(FileNotFoundError, match="missing.mid"):
        MidiTokenizer().encode(tmp_path / "missing.mid")
