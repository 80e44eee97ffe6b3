"""``clews-pipe report EVAL_DIR``: one self-contained HTML page of an evaluation.

Everything is inside the file: the metrics with their 95% CIs, the provenance, the segment-level
figure when the folder has one (PNG embedded as a data: URI), the AP distribution and the clique
sizes (inline SVG drawn here), and the per-query table (worst queries first, sortable by clicking a
column header, a few lines of inline script) with each query's ten nearest neighbours marked
correct (✓, same clique) or not (✗). No stylesheet, script or font is fetched, and the page's own
Content-Security-Policy forbids every network load, so it makes no request when opened, offline or on a cluster's login node. Text from the evaluation files is
HTML-escaped, never interpreted.
"""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path

from clews_pipe.atomic import write_text_atomic
from clews_pipe.errors import ClewsError
from clews_pipe.reporting.eval_dir import read_metrics
from clews_pipe.reporting.per_query import read_per_query

#: The page's own promise that it loads nothing: every fetch (image, script, style, font, frame,
#: connection, form target) is forbidden by the browser; only the inline style and script and the
#: embedded ``data:`` images of the page itself are allowed.
CONTENT_SECURITY_POLICY = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                           "script-src 'unsafe-inline'; base-uri 'none'; form-action 'none'")

_SORT_SCRIPT = """
document.querySelectorAll('table.sortable th').forEach(function (th, col) {
  th.addEventListener('click', function () {
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.order !== 'asc';
    th.dataset.order = asc ? 'asc' : 'desc';
    rows.sort(function (a, b) {
      var x = a.cells[col].dataset.v || a.cells[col].textContent;
      var y = b.cells[col].dataset.v || b.cells[col].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
      return asc ? c : -c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  });
});
"""

_STYLE = """
body { font-family: sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; text-align: left; vertical-align: top; }
th { background: #f0f0f0; cursor: pointer; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: #17803d; } .bad { color: #b42318; }
.nb { font-family: monospace; font-size: 12px; }
h2 { margin-top: 1.6em; }
"""


def _number(text) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value


def _fmt(value, digits: int = 3) -> str:
    value = _number(value)
    return "–" if not math.isfinite(value) else f"{value:.{digits}f}"


def _histogram_svg(values: list[float], bins: int, lo: float, hi: float, xlabel: str, integer: bool = False) -> str:
    """A small bar chart as inline SVG (counts of ``values`` in ``bins`` equal bins over [lo, hi])."""
    values = [v for v in values if math.isfinite(v)]
    width, height, pad = 420, 160, 30
    if not values:
        return "<p>(no values)</p>"
    counts = [0] * bins
    for v in values:
        i = int((v - lo) / (hi - lo) * bins) if hi > lo else 0
        counts[min(max(i, 0), bins - 1)] += 1
    top = max(counts)
    bar_w = (width - 2 * pad) / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + 20}" role="img">']
    for i, c in enumerate(counts):
        h = (height - 2 * pad) * c / top
        x = pad + i * bar_w
        parts.append(f'<rect x="{x:.1f}" y="{height - pad - h:.1f}" width="{bar_w - 1:.1f}" height="{h:.1f}" '
                     f'fill="#4c78a8"><title>{c}</title></rect>')
    left = f"{lo:g}" if not integer else str(int(lo))
    right = f"{hi:g}" if not integer else str(int(hi))
    parts.append(f'<text x="{pad}" y="{height - pad + 14}" font-size="11">{left}</text>')
    parts.append(f'<text x="{width - pad}" y="{height - pad + 14}" font-size="11" text-anchor="end">{right}</text>')
    parts.append(f'<text x="{width / 2}" y="{height + 10}" font-size="11" text-anchor="middle">{html.escape(xlabel)}</text>')
    parts.append(f'<text x="4" y="{pad - 8}" font-size="11">max {top}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _metric_rows(metrics: dict) -> list[dict]:
    if metrics.get("level") == "segment":
        return list(metrics.get("per_tau") or [])
    return [metrics]


def _metrics_table(metrics: dict) -> str:
    rows = _metric_rows(metrics)
    segment = metrics.get("level") == "segment"
    head = (["τ [s]"] if segment else []) + ["MAP", "MR1", "NAR (%)", "NAR strict (%)", "queries", "skipped", "MAP chance"]
    out = ["<table id='metrics'><thead><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        cells = ([f"{_number(r.get('tau')):g}"] if segment else []) + [
            f"{_fmt(r.get('MAP'))} ± {_fmt(r.get('MAP_ci'))}",
            f"{_fmt(r.get('MR1'), 1)} ± {_fmt(r.get('MR1_ci'), 1)}",
            f"{_fmt(r.get('NAR'), 2)} ± {_fmt(r.get('NAR_ci'), 2)}",
            _fmt(r.get("NAR_strict"), 2),
            str(r.get("queries", "–")), str(r.get("skipped", "–")), _fmt(r.get("MAP_chance")),
        ]
        out.append("<tr>" + "".join(f"<td class='num'>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _provenance_table(metrics: dict) -> str:
    provenance = metrics.get("provenance") or {}
    if not provenance:
        return "<p>(no provenance recorded)</p>"
    cells = "".join(f"<tr><th>{html.escape(str(k))}</th><td>{'–' if v is None else html.escape(str(v))}</td></tr>"
                    for k, v in provenance.items())
    return f"<table id='provenance'>{cells}</table>"


def _neighbours_cell(text: str) -> str:
    items = []
    for item in (text or "").split():
        fields = item.rsplit(":", 2)  # track:distance:match (a track id may itself hold ':')
        if len(fields) != 3:
            continue
        track, dist, match = fields
        mark, cls = ("✓", "ok") if match == "1" else ("✗", "bad")
        items.append(f"<span class='{cls}'>{mark} {html.escape(track)} ({html.escape(dist)})</span>")
    return "<br>".join(items)


def _per_query_table(rows: list[dict]) -> str:
    if not rows:
        return "<p>(no per_query.csv in this folder)</p>"
    rows = sorted(rows, key=lambda r: (_number(r.get("AP")) if math.isfinite(_number(r.get("AP"))) else 2.0))
    head = ["query", "clique", "AP", "R1", "NAR (%)", "versions", "ten nearest (✓ same clique)"]
    out = ["<table id='per-query' class='sortable'><thead><tr>"
           + "".join(f"<th>{h}</th>" for h in head) + "</tr></thead><tbody>"]
    for r in rows:
        ap = _number(r.get("AP"))
        out.append(
            "<tr class='query'>"
            f"<td>{html.escape(r.get('track', ''))}</td><td>{html.escape(r.get('clique', ''))}</td>"
            f"<td class='num' data-v='{ap if math.isfinite(ap) else 2}'>{_fmt(ap)}</td>"
            f"<td class='num'>{html.escape(r.get('R1', ''))}</td>"
            f"<td class='num'>{_fmt(r.get('NAR'), 2)}</td>"
            f"<td class='num'>{html.escape(r.get('n_positives', ''))}</td>"
            f"<td class='nb'>{_neighbours_cell(r.get('neighbours', ''))}</td></tr>"
        )
    out.append("</tbody></table>")
    return "".join(out)


def render_report(eval_dir: str | Path) -> str:
    """The HTML text of the report of ``eval_dir``."""
    eval_dir = Path(eval_dir)
    metrics, rows = read_metrics(eval_dir), read_per_query(eval_dir)
    provenance = metrics.get("provenance") or {}
    title = (f"clews-pipe evaluation: {metrics.get('level', '?')} level, {metrics.get('redux', '?')}, "
             f"split {provenance.get('split', '?')}")
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'>"
             f"<meta http-equiv='Content-Security-Policy' content=\"{CONTENT_SECURITY_POLICY}\">"
             f"<title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    for warning in metrics.get("warnings") or []:
        parts.append(f"<p class='bad'>warning: {html.escape(str(warning))}</p>")
    parts += ["<h2>Metrics (95% CI)</h2>", _metrics_table(metrics), "<h2>Provenance</h2>", _provenance_table(metrics)]
    figure = eval_dir / "segment_level.png"
    if figure.is_file():
        data = base64.b64encode(figure.read_bytes()).decode()
        parts.append(f"<h2>Segment level</h2><img alt='segment-level figure' src='data:image/png;base64,{data}'>")
    if rows:
        aps = [_number(r.get("AP")) for r in rows]
        sizes = [_number(r.get("n_positives")) + 1 for r in rows]
        finite_sizes = [s for s in sizes if math.isfinite(s)]
        parts += ["<h2>AP distribution</h2>", _histogram_svg(aps, 20, 0.0, 1.0, "AP per query"),
                  "<h2>Clique sizes (versions in the split, per query)</h2>",
                  _histogram_svg(finite_sizes, min(20, max(1, int(max(finite_sizes or [1])))), 1.0,
                                 max(finite_sizes or [1.0]) + 1, "versions of the query's clique", integer=True)]
    parts += [f"<h2>Queries ({len(rows)}), worst first</h2>", _per_query_table(rows),
              f"<script>{_SORT_SCRIPT}</script></body></html>"]
    return "\n".join(parts)


def write_report(eval_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``report.html`` (default ``EVAL_DIR/report.html``) atomically; return its path."""
    out = Path(out) if out is not None else Path(eval_dir) / "report.html"
    if out.is_dir():
        raise ClewsError(f"{out}: is a directory (give the HTML file to write)")
    write_text_atomic(out, render_report(eval_dir))
    return out
