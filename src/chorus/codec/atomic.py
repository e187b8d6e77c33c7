"""Atomic writes of binary codec artifacts (npy / npz / bytes), on data_pipelines' temp-file
mechanism: write beside the destination, then os.replace."""

from __future__ import annotations

import io

import numpy as np

from data_pipelines.atomic import atomic_path, write_json, write_text

__all__ = ["atomic_path", "write_bytes", "write_json", "write_npy", "write_npz", "write_text"]


def write_bytes(path: str, data: bytes) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def write_npy(path: str, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, np.asarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def write_npz(path: str, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()})
    write_bytes(path, buf.getvalue())
