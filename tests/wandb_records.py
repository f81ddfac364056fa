"""Read an offline W&B run's ``.wandb`` file with wandb's own protobuf records.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then
32 KiB blocks of chunks ``crc32 (4) | length (2, LE) | type (1) | data``, where a
record is one FULL chunk or FIRST, MIDDLE..., LAST chunks.
"""

from __future__ import annotations

import json
import struct
import time
from pathlib import Path

from wandb.proto import wandb_internal_pb2

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def read_records(path: str | Path) -> list[wandb_internal_pb2.Record]:
    data = Path(path).read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a .wandb file"
    records, pending, pos = [], b"", HEADER
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # block trailer padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + HEADER])
        chunk = data[pos + HEADER : pos + HEADER + length]
        pos += HEADER + length
        if kind == 0 and length == 0:
            continue
        if kind == FULL:
            pending = chunk
        elif kind == FIRST:
            pending = chunk
            continue
        elif kind == MIDDLE:
            pending += chunk
            continue
        elif kind == LAST:
            pending += chunk
        record = wandb_internal_pb2.Record()
        record.ParseFromString(pending)
        records.append(record)
        pending = b""
    return records


def wait_until_complete(path: str | Path, timeout: float = 60.0) -> None:
    """Wait until the run's exit record is on disk.

    wandb's service process writes the file asynchronously: ``run.finish()`` can return
    before the last records are flushed (seen with wandb 0.31 inside a long test session).
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if any(r.WhichOneof("record_type") == "exit" for r in read_records(path)):
                return
        except Exception:  # a chunk still being written
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} has no exit record after {timeout} s")
        time.sleep(0.2)


def history(path: str | Path) -> list[dict]:
    """Every logged step: {key: value}; media objects become dicts of their fields."""
    steps = []
    for record in read_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        step: dict = {}
        for item in record.history.item:
            keys = [item.key] if item.key else list(item.nested_key)
            value = json.loads(item.value_json)
            if len(keys) == 1:
                step[keys[0]] = value
            else:
                step.setdefault(keys[0], {})[keys[1]] = value
        steps.append(step)
    return steps


def config(path: str | Path) -> dict:
    """The run's config: {key: value}."""
    out = {}
    for record in read_records(path):
        if record.WhichOneof("record_type") == "config":
            for item in record.config.update:
                value = json.loads(item.value_json)
                if isinstance(value, dict) and set(value) == {"value"}:
                    value = value["value"]
                out[item.key or "/".join(item.nested_key)] = value
    return out
