"""TensorBoard event files without TensorFlow: the record format and scalar Events, by hand.

A tfevents file is a sequence of records, each

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes)
    | data (a serialized `Event` protobuf) | uint32 masked_crc32c(data)

and the first Event carries `file_version = "brain.Event:2"`. The Event / Summary messages
are tiny, so we encode the few fields we need with the protobuf wire format directly:

    Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
    Summary { repeated Value value = 1; }
    Value   { string tag = 1; float simple_value = 2; }

`read_events` parses such files back (checking both CRCs), for tests and for tools.
"""

from __future__ import annotations

import os
import socket
import struct
import time
from collections.abc import Iterator, Mapping

FILE_VERSION = "brain.Event:2"

# --------------------------------------------------------------------------- crc32c


def _crc32c_table() -> tuple[int, ...]:
    poly = 0x82F63B78  # Castagnoli, reflected
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ poly if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data: bytes) -> int:
    """The TFRecord mask: rotate right by 15 and add a constant (guards CRCs of CRCs)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# --------------------------------------------------------------------------- protobuf wire


def _varint(value: int) -> bytes:
    if value < 0:
        raise ValueError(f"tfevents varint: expected a value >= 0, got {value}")
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint(field << 3 | wire_type)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _key(field, 2) + _varint(len(payload)) + payload


def encode_scalar_value(tag: str, value: float) -> bytes:
    return _length_delimited(1, tag.encode()) + _key(2, 5) + struct.pack("<f", value)


def encode_event(wall_time: float, step: int, *, scalars: Mapping[str, float] | None = None,
                 file_version: str | None = None) -> bytes:
    out = _key(1, 1) + struct.pack("<d", wall_time) + _key(2, 0) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if scalars:
        summary = b"".join(_length_delimited(1, encode_scalar_value(tag, float(v)))
                           for tag, v in scalars.items())
        out += _length_delimited(5, summary)
    return out


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise ValueError("tfevents: truncated varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _fields(data: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, raw value) for each field of a serialized message."""
    pos = 0
    while pos < len(data):
        key, pos = _read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _read_varint(data, pos)
        elif wire_type == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire_type == 2:
            length, pos = _read_varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire_type == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"tfevents: unsupported wire type {wire_type} (field {field})")
        yield field, wire_type, value


def decode_event(data: bytes) -> dict:
    """{"wall_time", "step", "file_version"?, "scalars": {tag: value}} from Event bytes."""
    event: dict = {"wall_time": 0.0, "step": 0, "scalars": {}}
    for field, _, value in _fields(data):
        if field == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif field == 2:
            event["step"] = value
        elif field == 3:
            event["file_version"] = value.decode()
        elif field == 5:
            for vfield, _, raw in _fields(value):
                if vfield != 1:
                    continue
                tag, simple = None, None
                for f, _, v in _fields(raw):
                    if f == 1:
                        tag = v.decode()
                    elif f == 2:
                        simple = struct.unpack("<f", v)[0]
                if tag is not None and simple is not None:
                    event["scalars"][tag] = simple
    return event


# --------------------------------------------------------------------------- records


def encode_record(data: bytes) -> bytes:
    header = struct.pack("<Q", len(data))
    return (header + struct.pack("<I", masked_crc32c(header)) + data
            + struct.pack("<I", masked_crc32c(data)))


def read_records(path: str) -> Iterator[bytes]:
    """Record payloads; a truncated final record (a writer killed mid-write) ends the file."""
    with open(path, "rb") as f:
        blob = f.read()
    pos = 0
    while pos + 12 <= len(blob):
        header = blob[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (header_crc,) = struct.unpack("<I", blob[pos + 8:pos + 12])
        if header_crc != masked_crc32c(header):
            raise ValueError(f"{path}: record at byte {pos}: length CRC mismatch")
        end = pos + 12 + length + 4
        if end > len(blob):
            return
        data = blob[pos + 12:pos + 12 + length]
        (data_crc,) = struct.unpack("<I", blob[end - 4:end])
        if data_crc != masked_crc32c(data):
            raise ValueError(f"{path}: record at byte {pos}: data CRC mismatch")
        yield data
        pos = end


def read_events(path: str) -> list[dict]:
    return [decode_event(r) for r in read_records(path)]


def read_scalars(logdir: str) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value), ...]} over every event file in `logdir`, in file order."""
    out: dict[str, list[tuple[int, float]]] = {}
    for name in sorted(os.listdir(logdir)):
        if ".tfevents." not in name:
            continue
        for event in read_events(os.path.join(logdir, name)):
            for tag, value in event["scalars"].items():
                out.setdefault(tag, []).append((event["step"], value))
    return out


class EventWriter:
    """Appends scalar summaries to a new events file in `logdir` (one file per writer)."""

    def __init__(self, logdir: str):
        os.makedirs(logdir, exist_ok=True)
        # TensorBoard orders files by name: the timestamp first, then host and pid so two
        # writers (a resumed run, another host) never collide.
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}"
                f".{os.getpid()}")
        self.path = os.path.join(logdir, name)
        self._file = open(self.path, "ab")
        self._write(encode_event(time.time(), 0, file_version=FILE_VERSION))

    def _write(self, event: bytes) -> None:
        self._file.write(encode_record(event))

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        finite = {k: float(v) for k, v in values.items() if v is not None}
        if finite:
            self._write(encode_event(time.time(), step, scalars=finite))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            self._file.close()
