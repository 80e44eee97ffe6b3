"""``clews-pipe report``: a self-contained HTML page, rendered in a real headless Chromium.

The evaluation folder is written by hand here (metrics.json + per_query.csv in the documented
formats), so the page's content is checked against known values, not against the code's own output.
"""

from __future__ import annotations

import http.server
import json
import re
import shutil
import subprocess
import threading

import pytest

from clews_pipe.cli.app import main
from clews_pipe.reporting.plots import SegmentCurve, plot_segment_curves

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_browser = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (make test installs it as root)")

QUERIES = [  # track, clique, AP, R1, NAR, n_positives, neighbours
    ("a1", "A", 1.0, 1, 0.0, 1, "a2:0.01:1 b1:0.5:0"),
    ("a2", "A", 0.5, 2, 50.0, 1, "b1:0.2:0 a1:0.3:1"),
    ("b1", "B", 0.25, 4, 100.0, 1, "a1:0.1:0 a2:0.2:0 c1:0.3:0 b2:0.4:1"),
    ("b2", "B", 0.75, 1, 10.0, 1, "b1:0.4:1 <script>alert(1)</script>:0.9:0"),
    ("c1", "C", None, None, None, 0, "a1:0.3:0"),
]


@pytest.fixture
def eval_dir(tmp_path):
    out = tmp_path / "eval"
    out.mkdir()
    metrics = {
        "level": "track", "redux": "bpwr-10", "MAP": 0.625, "MAP_ci": 0.2, "MR1": 2.0, "MR1_ci": 1.0,
        "NAR": 40.0, "NAR_ci": 30.0, "NAR_strict": 41.0, "queries": 4, "skipped": 1, "MAP_chance": 0.3,
        "warnings": [], "provenance": {"split": "test", "checkpoint": "run/checkpoint_best.ckpt", "world_size": 1},
    }
    (out / "metrics.json").write_text(json.dumps(metrics))
    lines = ["track,clique,AP,R1,NAR,n_positives,neighbours"]
    for track, clique, ap, r1, nar, n_pos, nb in QUERIES:
        cells = ["" if v is None else str(v) for v in (ap, r1, nar)]
        lines.append(",".join([track, clique, *cells, str(n_pos), f'"{nb}"']))
    (out / "per_query.csv").write_text("\n".join(lines) + "\n")
    return out


def _chromium(*args: str, timeout: float = 60) -> str:
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-features=NetworkTimeServiceQuerying"]
    proc = subprocess.run(base + list(args), capture_output=True, text=True, timeout=timeout)
    return proc.stdout


def test_report_content_without_a_browser(eval_dir, capsys):
    assert main(["report", str(eval_dir)]) == 0
    page = (eval_dir / "report.html").read_text()
    assert page.count("<tr class='query'>") == len(QUERIES)
    # worst query first (b1, AP 0.25), the query without a positive last
    order = [page.index(f"<td>{t}</td>") for t in ("b1", "a2", "b2", "a1", "c1")]
    assert order == sorted(order)
    assert "0.625 ± 0.200" in page and "run/checkpoint_best.ckpt" in page
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;" in page  # escaped, never run
    for scheme in ("http://", "https://", "//cdn"):  # nothing fetched (the SVG namespace is a name, not a request)
        assert page.replace('xmlns="http://www.w3.org/2000/svg"', "").count(scheme) == 0


def test_report_errors_are_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "metrics.json" in err


class _ProbeServer:
    """A loopback HTTP server that records the paths asked of it (each probe has its own path).

    Only requests for a probe's own path count, so whatever Chromium fetches on its own (update
    checks, time queries, ...) can never reach or affect the check."""

    def __init__(self):
        self.paths: list[str] = []
        seen = self.paths

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                seen.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/{name}.png"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def _render(page, tmp_path) -> str:
    """The DOM of ``page`` after headless Chromium ran it (background networking off)."""
    return _chromium(f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=3000", "--dump-dom",
                     page.as_uri())


def _with_probe(page_html: str, url: str) -> str:
    """The page with one image load of ``url`` added at the end of its body."""
    return page_html.replace("</body>", f"<img alt='probe' src='{url}'></body>")


@needs_browser
def test_report_renders_in_chromium_and_its_policy_forbids_every_load(eval_dir, tmp_path):
    report = tmp_path / "r.html"
    assert main(["report", str(eval_dir), "--out", str(report)]) == 0
    dom = _render(report, tmp_path)
    assert dom.count('<tr class="query">') == len(QUERIES), dom[:500]
    assert 'id="metrics"' in dom and 'id="provenance"' in dom
    # the policy is in the rendered page, and it forbids every load by default
    policy = re.search(r'<meta http-equiv="Content-Security-Policy" content="([^"]*)"', dom)
    assert policy is not None, dom[:500]
    directives = {d.split()[0]: d.split()[1:] for d in policy.group(1).split(";") if d.strip()}
    assert directives["default-src"] == ["'none'"]
    assert directives["img-src"] == ["data:"] and "connect-src" not in directives
    with _ProbeServer() as probe:
        # the report's own page with a load added: the browser refuses it
        blocked = tmp_path / "blocked.html"
        blocked.write_text(_with_probe(report.read_text(), probe.url("report")))
        _render(blocked, tmp_path)
        # control: the same load in a page without the policy reaches the server
        control = tmp_path / "control.html"
        control.write_text(_with_probe("<html><body></body></html>", probe.url("control")))
        _render(control, tmp_path)
    assert "/control.png" in probe.paths, f"the control load was not seen: {probe.paths}"
    assert "/report.png" not in probe.paths


def test_plot_overlays_runs_with_chance_and_clipped_bands(tmp_path):
    rows = [{"tau": t, "MAP": m, "MAP_ci": 0.5, "NAR": n, "NAR_ci": 1.0, "MAP_chance": 0.1}
            for t, m, n in ((5, 0.6, 3.0), (20, 0.9, 1.0))]
    out = plot_segment_curves([SegmentCurve(tuple(rows), "run A"), SegmentCurve(tuple(rows), "run B")], tmp_path / "p.png", "t")
    assert out.stat().st_size > 1000
    import matplotlib.image

    assert matplotlib.image.imread(out).ndim == 3
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"level": "segment", "per_tau": rows}))
    assert main(["plot", str(tmp_path / "a"), str(tmp_path / "b"), "--out", str(tmp_path / "both.png"),
                 "--labels", "A,B"]) == 0
    assert (tmp_path / "both.png").is_file()
    assert main(["plot", str(tmp_path / "a"), "--out", str(tmp_path / "x.png"), "--labels", "A,B"]) == 2
