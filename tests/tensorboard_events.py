"""A reader of TensorBoard event files for the tests: what did the trainer really write?

Records are `uint64 length | masked CRC-32C of length | Event bytes | masked CRC-32C of data`
(TensorFlow's TFRecord framing); the Event protobuf class is tensorboardX's own. No TensorFlow.
"""

from __future__ import annotations

import glob
import os
import struct
from collections.abc import Iterator

from tensorboardX.proto.event_pb2 import Event
from tensorboardX.record_writer import masked_crc32c


def read_records(path: str) -> Iterator[bytes]:
    """Each record's payload; a torn last record (a killed writer) ends the file."""
    with open(path, "rb") as f:
        data = f.read()
    offset = 0
    while offset + 12 <= len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[offset + 8:offset + 12])
        if masked_crc32c(header) != length_crc:
            raise ValueError(f"{path}@{offset}: length CRC mismatch")
        end = offset + 12 + length + 4
        if end > len(data):
            return
        payload = data[offset + 12:offset + 12 + length]
        (data_crc,) = struct.unpack("<I", data[end - 4:end])
        if masked_crc32c(payload) != data_crc:
            raise ValueError(f"{path}@{offset}: data CRC mismatch")
        yield payload
        offset = end


def read_events(logdir: str) -> list[Event]:
    """Every Event of every event file in `logdir`, in file then record order."""
    paths = sorted(glob.glob(os.path.join(logdir, "events.out.tfevents.*")))
    return [Event.FromString(r) for p in paths for r in read_records(p)]


def read_values(logdir: str) -> dict[str, list[tuple[int, object]]]:
    """{tag: [(step, summary value)]}: a float for scalars, the proto (audio / image /
    histo) otherwise."""
    out: dict[str, list[tuple[int, object]]] = {}
    for event in read_events(logdir):
        for value in event.summary.value:
            kind = value.WhichOneof("value")
            item = value.simple_value if kind == "simple_value" else getattr(value, kind)
            out.setdefault(value.tag, []).append((event.step, item))
    return out


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    return {tag: items for tag, items in read_values(logdir).items()
            if all(isinstance(v, float) for _, v in items)}
