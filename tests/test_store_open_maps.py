"""Bounded open memory maps: a reader sampling across thousands of parts keeps at most
``max_open_maps`` maps (one file descriptor each) open, so it runs under a low ``ulimit -n``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

from clews_pipe.errors import ClewsError
from clews_pipe.store import create_store, open_store
from clews_pipe.store.reader import DEFAULT_MAX_OPEN_MAPS

N_PARTS = 2000
FRAMES = 6
SRC = Path(__file__).resolve().parents[1] / "src"


def _frames(i: int) -> np.ndarray:
    """Track i's frames: (i mod 997) + frame + bin/4, every value exact in float16."""
    base = np.float16(i % 997)
    return (base + np.arange(FRAMES, dtype=np.float16)[:, None]
            + (np.arange(84, dtype=np.float16) / 4)[None, :]).astype(np.float16)


@pytest.fixture(scope="module")
def many_part_store():
    """A real 2,000-part hdf5 store (one track per part) written by StoreWriter; on tmpfs when
    the machine has one, since every part is fsynced."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        writer = create_store(Path(tmp) / "s", backend="hdf5")
        for i in range(N_PARTS):
            writer.write_part(f"p{i:05d}", [{"track_id": f"t{i:05d}", "status": "ok"}], [_frames(i)])
        writer.consolidate()
        yield Path(tmp) / "s"


_READER = r"""
import json, os, resource, sys
import numpy as np
resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))
from clews_pipe.store import open_store
store = open_store(sys.argv[1])
ids = list(store.index.index)
rng = np.random.default_rng(0)
bad, most_fds, most_maps, reads = 0, 0, 0, 0
for sweep in range(2):
    for j in rng.permutation(len(ids)):
        tid = ids[j]
        i = int(tid[1:])
        window = np.array(store.read(tid, 1, 5))
        expected = (np.float16(i % 997) + np.arange(1, 5, dtype=np.float16)[:, None]
                    + (np.arange(84, dtype=np.float16) / 4)[None, :]).astype(np.float16)
        bad += int(not np.array_equal(window, expected))
        reads += 1
        if reads % 97 == 0:
            most_fds = max(most_fds, len(os.listdir("/proc/self/fd")))
            most_maps = max(most_maps, getattr(store, "open_maps", lambda: -1)())
print(json.dumps({"reads": reads, "bad": bad, "parts": len(store.part_seqs), "most_fds": most_fds,
                  "most_maps": most_maps, "limit": getattr(store, "max_open_maps", None)}))
"""


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count descriptors")
def test_reads_every_part_of_a_2000_part_store_under_ulimit_256(many_part_store):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    env.pop("CLEWS_PIPE_MAX_OPEN_MAPS", None)
    proc = subprocess.run([sys.executable, "-c", _READER, str(many_part_store)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["parts"] == N_PARTS and result["reads"] == 2 * N_PARTS
    assert result["bad"] == 0
    assert result["limit"] == DEFAULT_MAX_OPEN_MAPS < 256
    assert 0 < result["most_maps"] <= DEFAULT_MAX_OPEN_MAPS
    assert result["most_fds"] < 256


def test_lru_keeps_recent_maps_and_bound_is_configurable(many_part_store, monkeypatch):
    store = open_store(many_part_store, max_open_maps=3)
    ids = [f"t{i:05d}" for i in range(5)]
    for tid in ids[:3]:
        store.read(tid)
    assert list(store._maps) == ["p00000", "p00001", "p00002"]
    store.read(ids[0])  # touched: now most recent
    store.read(ids[3])  # evicts p00001, the least recently used
    assert list(store._maps) == ["p00002", "p00000", "p00003"] and store.open_maps() == 3
    np.testing.assert_array_equal(store.read(ids[1]), _frames(1))  # reopened on demand
    assert store.open_maps() == 3
    clone = __import__("pickle").loads(__import__("pickle").dumps(store))
    assert clone.max_open_maps == 3 and clone.open_maps() == 0
    monkeypatch.setenv("CLEWS_PIPE_MAX_OPEN_MAPS", "7")
    assert open_store(many_part_store).max_open_maps == 7
    monkeypatch.setenv("CLEWS_PIPE_MAX_OPEN_MAPS", "zero")
    with pytest.raises(ClewsError, match="CLEWS_PIPE_MAX_OPEN_MAPS"):
        open_store(many_part_store)
    with pytest.raises(ClewsError, match="max_open_maps"):
        open_store(many_part_store, max_open_maps=0)
