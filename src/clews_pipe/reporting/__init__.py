"""Reporting: the evaluation folder's contract and what is drawn from it.

``eval_dir`` reads and writes ``metrics.json`` (strict JSON) and ``metrics.md``; ``per_query`` the
per-query table ``per_query.csv`` (its columns and the ten nearest candidates); ``html_report`` the
self-contained HTML page of ``clews-pipe report``; ``plots`` the segment-level figures
(``clews-pipe plot``).
"""
