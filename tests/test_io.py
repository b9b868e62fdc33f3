"""rl_isac.io: atomic writes leave either the old or the new file, never a partial one or a temporary."""

from __future__ import annotations

import json
import os
import stat

import pytest

from rl_isac.io import atomic_copy, atomic_write, atomic_write_text, file_sha256, write_json_atomic


def test_json_text_and_copy_round_trip(tmp_path):
    write_json_atomic({"a": [1, 2]}, tmp_path / "sub" / "x.json")
    assert json.loads((tmp_path / "sub" / "x.json").read_text()) == {"a": [1, 2]}
    atomic_write_text("hello", tmp_path / "t.txt")
    atomic_copy(tmp_path / "t.txt", tmp_path / "u.txt")
    assert (tmp_path / "u.txt").read_text() == "hello"
    assert file_sha256(tmp_path / "t.txt") == file_sha256(tmp_path / "u.txt")
    assert file_sha256(tmp_path / "t.txt") != file_sha256(tmp_path / "sub" / "x.json")
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE((tmp_path / "t.txt").stat().st_mode) == 0o666 & ~mask  # as open() would, not 0600
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_failed_write_keeps_the_old_file_and_removes_the_temporary(tmp_path):
    target = tmp_path / "keep.json"
    write_json_atomic({"v": 1}, target)

    def broken(tmp: str) -> None:
        with open(tmp, "w") as fh:
            fh.write('{"v": 2')  # half written
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, broken)
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.json"]
    with pytest.raises(TypeError):
        write_json_atomic({"bad": object()}, target)
    assert json.loads(target.read_text()) == {"v": 1}
