"""MIDI tokenizer: a MIDI file -> one melody token per frame, at the codec's frame rate.

UniAudio's singing tasks condition on frame-level MIDI: one token per frame, aligned with
the codec frames of the target. Each frame holds the highest sounding note (the melody of
a monophonic line; the top voice of a polyphonic one) or a rest.

Local ids (``onsets=True``, 257 ids)::

    0              <rest>    no note sounds
    1 + p          on:p      note p (MIDI pitch 0-127) starts in this frame
    129 + p        p         note p sounds, started in an earlier frame

Onsets are kept apart from sustained frames so that repeated notes stay visible: two
quarter notes on C4 give ``on:60 60 60 on:60 60 60``, not six equal frames. With
``onsets=False`` the layout is ``0 <rest>`` and ``1 + p`` for pitch ``p`` (129 ids).

Timing: a note that sounds over ``[start, end)`` seconds covers frames
``round(start * frame_rate)`` up to ``round(end * frame_rate)`` (exclusive), at least one
frame; tempo changes are followed. Drums (channel 10) are skipped unless ``drums=True``.
Files are read with ``mido`` (pure Python).
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lit_codec.tokenizers.base import require

__all__ = ["MidiError", "MidiFrames", "MidiNote", "MidiTokenizer"]

N_PITCHES = 128
REST = 0
DRUM_CHANNEL = 9  # channel 10 in 1-based MIDI numbering


class MidiError(ValueError):
    """A MIDI file that cannot be read; the message names the file."""


@dataclass(frozen=True)
class MidiNote:
    """One note, in seconds.

    Args:
        pitch: MIDI pitch 0-127.
        start: onset time in seconds.
        end: release time in seconds.
    """

    pitch: int
    start: float
    end: float


@dataclass
class MidiFrames:
    """The frame-level melody of a MIDI file."""

    ids: np.ndarray  # (T,) int64 local ids
    pitch: np.ndarray  # (T,) int64 MIDI pitch, -1 on rest frames
    onset: np.ndarray  # (T,) bool: a note starts in this frame
    frame_rate: float  # frames per second

    def __len__(self) -> int:
        return len(self.ids)


class MidiTokenizer:
    """MIDI file -> per-frame melody ids (rest / note onset / sustained note).

    Args:
        frame_rate: frames per second; the codec's (e.g. 50 for 16 kHz audio with hop 320).
        onsets: give note onsets ids of their own (257 ids), else pitch or rest only (129).
        drums: include notes on the drum channel (channel 10).
        tracks: indices of the tracks to read; default: all.
    """

    def __init__(
        self,
        frame_rate: float = 50.0,
        onsets: bool = True,
        drums: bool = False,
        tracks: Sequence[int] | None = None,
    ):
        if not frame_rate > 0:
            raise ValueError(f"frame_rate must be positive, got {frame_rate}")
        self.frame_rate = float(frame_rate)
        self.onsets = onsets
        self.drums = drums
        self.tracks = None if tracks is None else tuple(int(t) for t in tracks)

    # -- the common interface -------------------------------------------------------

    @property
    def vocab_size(self) -> int:
        return 1 + N_PITCHES * (2 if self.onsets else 1)

    def symbols(self) -> list[str]:
        """``<rest>``, then ``on:p`` for each pitch (with onsets), then ``p`` for each pitch."""
        held = [str(p) for p in range(N_PITCHES)]
        onset = [f"on:{p}" for p in range(N_PITCHES)] if self.onsets else []
        return ["<rest>", *onset, *held]

    def metadata(self) -> dict[str, Any]:
        return {
            "kind": "midi",
            "frame_rate": self.frame_rate,
            "onsets": self.onsets,
            "drums": self.drums,
            "tracks": None if self.tracks is None else list(self.tracks),
            "voice": "highest",
            "layout": "<rest>, on:0..127, 0..127" if self.onsets else "<rest>, 0..127",
        }

    # -- MIDI -> frames --------------------------------------------------------------

    def encode(self, midi: str | os.PathLike | Any, n_frames: int | None = None) -> np.ndarray:
        """Per-frame ids of a MIDI file.

        Args:
            midi: path of a ``.mid`` file, or a ``mido.MidiFile``.
            n_frames: pad with rests or cut to this many frames (the codec frames of the
                matching audio); default: up to the end of the file.

        Returns:
            ``(T,)`` int64 ids in ``[0, vocab_size)``.
        """
        return self.frames(midi, n_frames).ids

    __call__ = encode

    def frames(self, midi: str | os.PathLike | Any, n_frames: int | None = None) -> MidiFrames:
        """Ids, pitch and onset flag per frame (see :meth:`encode` for the arguments)."""
        notes, length = self.read_notes(midi)
        return self.frames_from_notes(notes, n_frames if n_frames is not None else self._n(length))

    def frames_from_notes(self, notes: Iterable[MidiNote], n_frames: int) -> MidiFrames:
        """The frames of notes given in seconds.

        Args:
            notes: the notes; overlapping ones resolve to the highest pitch.
            n_frames: number of frames; notes past the end are cut.
        """
        pitch = np.full(n_frames, -1, dtype=np.int64)  # (T,)
        start = np.full(n_frames, -1, dtype=np.int64)  # (T,) onset frame of the note shown
        # lower pitches first, and for one pitch earlier notes first: the last write wins
        for note in sorted(notes, key=lambda n: (n.pitch, n.start, n.end)):
            s = round(note.start * self.frame_rate)
            e = max(round(note.end * self.frame_rate), s + 1)
            if s >= n_frames:
                continue
            pitch[s:e] = note.pitch
            start[s:e] = s
        onset = (pitch >= 0) & (start == np.arange(n_frames))  # (T,)
        ids = np.zeros(n_frames, dtype=np.int64)  # rest
        sounding = pitch >= 0
        if self.onsets:
            ids[sounding] = 1 + N_PITCHES + pitch[sounding]
            ids[onset] = 1 + pitch[onset]
        else:
            ids[sounding] = 1 + pitch[sounding]
        return MidiFrames(ids, pitch, onset, self.frame_rate)

    def notes_from_ids(self, ids: Iterable[int]) -> list[MidiNote]:
        """The melody notes (in seconds) that frame ids describe: the inverse of :meth:`encode`.

        Without onset ids, a run of one pitch is one note.
        """
        notes: list[MidiNote] = []
        current: list[int] = []  # [pitch, start frame]
        ids = [int(i) for i in ids]
        for t, i in enumerate([*ids, REST]):
            if not 0 <= i < self.vocab_size:
                raise ValueError(f"id {i} at frame {t} is outside [0, {self.vocab_size})")
            new = self.onsets and 1 <= i <= N_PITCHES
            p = -1 if i == REST else (i - 1) % N_PITCHES
            if current and (new or p != current[0]):
                notes.append(
                    MidiNote(current[0], current[1] / self.frame_rate, t / self.frame_rate)
                )
                current = []
            if p >= 0 and not current:
                current = [p, t]
        return notes

    def read_notes(self, midi: str | os.PathLike | Any) -> tuple[list[MidiNote], float]:
        """The notes of a MIDI file (in seconds, tempo changes followed) and its length.

        Raises:
            FileNotFoundError: no such file.
            MidiError: the file is not a readable MIDI file (the message names it).
        """
        mido = require("mido", "mido", "MidiTokenizer")
        if isinstance(midi, (str, os.PathLike)):
            path = Path(midi)
            if not path.is_file():
                raise FileNotFoundError(f"MIDI file {str(path)!r} does not exist")
            try:
                midi = mido.MidiFile(path)
            except Exception as err:  # mido raises OSError, EOFError, KeyError, ValueError...
                raise MidiError(f"cannot read MIDI file {str(path)!r}: {err}") from err
        name = getattr(midi, "filename", None) or "<MidiFile>"
        try:
            return self._notes(midi)
        except MidiError:
            raise
        except Exception as err:
            raise MidiError(f"cannot read MIDI file {name!r}: {err}") from err

    # -- internals ----------------------------------------------------------------------

    def _n(self, seconds: float) -> int:
        return math.ceil(round(seconds * self.frame_rate, 6))

    def _notes(self, midi: Any) -> tuple[list[MidiNote], float]:
        tpb = midi.ticks_per_beat
        if not tpb or tpb <= 0:
            raise MidiError(f"MIDI file {midi.filename!r} uses SMPTE time or no ticks per beat")
        tracks = list(enumerate(midi.tracks))
        if self.tracks is not None:
            missing = [t for t in self.tracks if not 0 <= t < len(tracks)]
            if missing:
                raise MidiError(
                    f"MIDI file {midi.filename!r} has {len(tracks)} tracks; no track {missing}"
                )
        # type 0/1: one tempo map made of all tracks' set_tempo events; type 2: per track
        shared = _tempo_map([tr for _, tr in tracks]) if midi.type != 2 else None
        notes: list[MidiNote] = []
        length = 0.0
        for index, track in tracks:
            seconds = _Clock(shared or _tempo_map([track]), tpb)
            selected = self.tracks is None or index in self.tracks
            playing: dict[tuple[int, int], list[float]] = defaultdict(list)  # FIFO of onsets
            tick = 0
            for msg in track:
                tick += msg.time
                now = seconds(tick)
                if not selected or msg.type not in ("note_on", "note_off"):
                    continue
                if msg.channel == DRUM_CHANNEL and not self.drums:
                    continue
                key = (msg.channel, msg.note)
                if msg.type == "note_on" and msg.velocity > 0:
                    playing[key].append(now)
                elif playing[key]:  # note_off, or note_on with velocity 0
                    notes.append(MidiNote(msg.note, playing[key].pop(0), now))
            end = seconds(tick)
            length = max(length, end)
            for (_, pitch), starts in playing.items():  # never released: held to the end
                notes.extend(MidiNote(pitch, s, end) for s in starts)
        return notes, length


def _tempo_map(tracks: Sequence[Any]) -> list[tuple[int, int]]:
    """Sorted ``(tick, microseconds per beat)`` changes, starting with the default 120 bpm."""
    changes = {0: 500_000}
    for track in tracks:
        tick = 0
        for msg in track:
            tick += msg.time
            if msg.type == "set_tempo":
                changes[tick] = msg.tempo
    return sorted(changes.items())


class _Clock:
    """Ticks -> seconds under a tempo map (ticks only grow, so a cursor suffices)."""

    def __init__(self, tempo_map: list[tuple[int, int]], ticks_per_beat: int):
        self.map, self.tpb = tempo_map, ticks_per_beat
        self.i, self.base_tick, self.base_seconds = 0, 0, 0.0

    def __call__(self, tick: int) -> float:
        while self.i + 1 < len(self.map) and self.map[self.i + 1][0] <= tick:
            next_tick = self.map[self.i + 1][0]
            self.base_seconds += (
                (next_tick - self.base_tick) * self.map[self.i][1] / (1e6 * self.tpb)
            )
            self.base_tick, self.i = next_tick, self.i + 1
        return self.base_seconds + (tick - self.base_tick) * self.map[self.i][1] / (1e6 * self.tpb)
