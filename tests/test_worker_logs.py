"""Issue 10: worker tracebacks go to a log file in the store, not to the terminal."""

from __future__ import annotations

from clews_pipe.extract.cluster import dask_client
from clews_pipe.extract.config import extract_config


def _fails(x):
    raise OSError(f"simulated write failure {x}: parts/ unwritable")


def test_task_tracebacks_land_in_the_worker_log_not_on_stderr(tmp_path, capfd):
    conf = extract_config(audio=str(tmp_path), out=str(tmp_path / "s"), workers=1, progress=False)
    logs = tmp_path / "s" / "logs"
    with dask_client(conf, log_dir=str(logs)) as client:
        future = client.submit(_fails, 7, pure=False)
        exc = future.exception()
        assert "simulated write failure 7" in str(exc)
    captured = capfd.readouterr()
    assert "simulated write failure" not in captured.err and "Traceback" not in captured.err
    files = list(logs.glob("worker-*.log"))
    assert files, list(logs.iterdir()) if logs.exists() else "no log folder"
    text = "".join(f.read_text() for f in files)
    assert "Compute Failed" in text and "simulated write failure 7" in text
