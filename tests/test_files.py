"""Atomic writes: an error leaves the old content whole and no temporary behind."""

from __future__ import annotations

from pathlib import Path

import pytest

from lume_ray.files import atomic_dir, atomic_file, write_json


def test_atomic_dir_replaces_on_success_and_keeps_old_on_error(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with atomic_dir(out) as d:
        (d / "a.txt").write_text("one")
    assert (out / "a.txt").read_text() == "one"
    with pytest.raises(RuntimeError), atomic_dir(out) as d:
        (d / "a.txt").write_text("half")
        raise RuntimeError("crash mid-write")
    assert (out / "a.txt").read_text() == "one"
    with atomic_dir(out) as d:
        (d / "b.txt").write_text("two")
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporaries left


def test_atomic_file_and_json(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json(path, {"x": 1})
    with pytest.raises(ValueError), atomic_file(path) as tmp:
        tmp.write_text("garbage")
        raise ValueError("no")
    assert path.read_text().strip() == '{\n  "x": 1\n}'
    assert [p.name for p in tmp_path.iterdir()] == ["m.json"]
