"""The one atomic writer: all or nothing, strict JSON."""

import json
import math

import numpy as np
import pytest

from clews_pipe.atomic import atomic_path, write_json_atomic
from clews_pipe.errors import first_line


def test_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "a.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert json.loads(target.read_text()) == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]


def test_suffix_for_writers_that_append_one(tmp_path):
    target = tmp_path / "e.npz"
    with atomic_path(target, suffix=".npz") as tmp:
        np.savez(tmp, x=np.arange(3))
    assert np.load(target)["x"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["e.npz"]


def test_json_is_strict(tmp_path):
    target = tmp_path / "m.json"
    write_json_atomic(target, {"MAP": math.nan, "x": [np.float32(1.5), math.inf], "n": np.int64(3)})
    text = target.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"MAP": None, "x": [1.5, None], "n": 3}


def test_first_line():
    assert first_line(ValueError("\n  bad thing\nmore")) == "bad thing"
    assert first_line(KeyError()) == "KeyError"
    assert first_line(OSError(""), "unreadable") == "unreadable"
