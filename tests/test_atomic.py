"""chorus.atomic: a write replaces the destination whole or not at all, and the file gets the
permissions a plain open() would give (not mkstemp's owner-only 0600)."""

import os
import stat

import pytest

from chorus.atomic import atomic_path, write_json, write_text


def test_written_files_get_the_umask_permissions_not_0600(tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    path = tmp_path / "out.json"
    write_json(str(path), {"a": 1})
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    assert stat.S_IMODE(os.stat(path).st_mode) == stat.S_IMODE(os.stat(plain).st_mode)


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    path = tmp_path / "out.txt"
    write_text(str(path), "old")
    with pytest.raises(RuntimeError):
        with atomic_path(str(path)) as tmp, open(tmp, "w") as f:
            f.write("half")
            raise RuntimeError("crash mid-write")
    assert path.read_text() == "old"
    assert sorted(os.listdir(tmp_path)) == ["out.txt"]
