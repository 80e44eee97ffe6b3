"""``clews-pipe index build EMBEDDINGS --out INDEX`` and ``clews-pipe search INDEX QUERY``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer

from clews_pipe.errors import ClewsError

index_app = typer.Typer(help="FAISS indexes (exact or approximate) over candidate segment embeddings.", no_args_is_help=True)


@index_app.command("build")
def build(
    embeddings: Path = typer.Argument(..., help="evaluation embeddings (.npz or chunked store), or a folder of 'clews-pipe embed' outputs"),
    out: Path = typer.Option(..., "--out", help="index file to write (its segment mapping goes beside it)"),
    hop: float = typer.Option(5.0, "--hop", help="segment hop in seconds of an evaluation embeddings file"),
    kind: str = typer.Option("flat", "--kind", help="flat (exact), ivf-flat, ivf-pq or hnsw (approximate, exact re-rank)"),
    nlist: Optional[int] = typer.Option(None, "--nlist", help="IVF cells (default: power of two <= 4 sqrt(segments))"),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF cells searched (default: tuned to --target-recall; given: only measured)"),
    pq_m: Optional[int] = typer.Option(None, "--pq-m", help="PQ sub-quantizers (default D/8)"),
    pq_bits: Optional[int] = typer.Option(None, "--pq-bits", help="bits per PQ code (default 8)"),
    hnsw_m: Optional[int] = typer.Option(None, "--hnsw-m", help="HNSW links per node (default 32)"),
    ef_construction: Optional[int] = typer.Option(None, "--ef-construction", help="HNSW build breadth (default 80)"),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="HNSW search breadth (default: tuned to --target-recall; given: only measured)"),
    train_size: Optional[int] = typer.Option(None, "--train-size", help="IVF training vectors (default max(64 nlist, 20000))"),
    rerank: Optional[int] = typer.Option(None, "--rerank", help="approximate kinds: candidates kept per query segment = max(64, rerank x top) (default 10; ivf-pq tunes it)"),
    target_recall: float = typer.Option(0.95, "--target-recall", help="approximate kinds: tune nprobe / ef-search until the top 10 equals exact search's in this fraction of positions (0 < r <= 1)"),
    recall_queries: int = typer.Option(100, "--recall-queries", help="approximate kinds: sample tracks the recall is measured on"),
) -> None:
    """Index every unpadded segment with its track and start time. Approximate kinds measure their
    recall@10 against exact search and tune their search setting to --target-recall (last line)."""
    from clews_pipe.search.ann import check_kind
    from clews_pipe.search.recall import RecallReport, check_target
    from clews_pipe.search.segment_index import build_segment_index, mapping_path

    check_target(target_recall)
    if recall_queries < 1:
        raise ClewsError(f"--recall-queries must be >= 1, got {recall_queries}")
    params = dict(nlist=nlist, nprobe=nprobe, pq_m=pq_m, pq_bits=pq_bits, hnsw_m=hnsw_m,
                  ef_construction=ef_construction, ef_search=ef_search, train_size=train_size, rerank=rerank)
    built = build_segment_index(embeddings, out, hop=hop, kind=check_kind(kind), params=params,
                                target_recall=target_recall, recall_queries=recall_queries)
    typer.echo(f"{out}: {built.n_segments} segments of {len(built.tracks)} tracks, D={built.dim}, {kind} "
               f"(mapping {mapping_path(out).name})")
    if built.recall is not None:
        typer.echo(RecallReport(**built.recall).line())
    else:
        typer.echo("exact search (flat): recall 1")


def search(
    index: Path = typer.Argument(..., help="index written by 'clews-pipe index build'"),
    query: Path = typer.Argument(..., help="audio file (needs --checkpoint) or a 'clews-pipe embed' .npz"),
    top: int = typer.Option(10, "--top", help="tracks to return"),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="model that embeds an audio query"),
    hop: float = typer.Option(5.0, "--hop", help="audio query: segment hop in seconds"),
    length: Optional[float] = typer.Option(None, "--len", help="audio query: segment length in seconds (default: the model's)"),
    exclude: List[str] = typer.Option([], "--exclude", help="track name to leave out (repeatable)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
    device: str = typer.Option("cpu", "--device", help="torch device for an audio query"),
    trust_checkpoint: bool = typer.Option(False, "--trust-checkpoint", help="allow arbitrary pickled objects in the checkpoint"),
    nprobe: Optional[int] = typer.Option(None, "--nprobe", help="IVF indexes: cells searched (default: the index's)"),
    ef_search: Optional[int] = typer.Option(None, "--ef-search", help="HNSW indexes: search breadth (default: the index's)"),
    store: Optional[Path] = typer.Option(None, "--store", help="feature store whose index names each match's clique, title and artist"),
) -> None:
    """Best-matching tracks by R_min (closest pair of query and candidate segments), with the pair's times.
    Approximate indexes propose candidate tracks; they are re-ranked by their exact R_min."""
    from clews_pipe.embeddings.from_audio import embed_audio_file, load_file_embedding
    from clews_pipe.search.segment_index import load_segment_index, search_tracks

    seg_index = load_segment_index(index, {"nprobe": nprobe, "ef_search": ef_search})
    if not query.is_file():
        raise ClewsError(f"{query}: query file not found")
    if query.suffix.lower() == ".npz":
        q = load_file_embedding(query)
    elif checkpoint is None:
        raise ClewsError(f"{query}: an audio query needs --checkpoint to embed it (or give an embed .npz)")
    else:
        from clews_pipe.model.checkpoint import load_model

        model, _ = load_model(checkpoint, trust=trust_checkpoint, device=device)
        q = embed_audio_file(model, query, shingle_len=length, shingle_hop=hop, device=device)
    matches = search_tracks(seg_index, q.z, q.starts, top=top, exclude=exclude)
    info = _track_info(store) if store is not None else None
    rows = [dict(m.as_dict(), **(info(m.track) if info else {})) for m in matches]
    if as_json:
        typer.echo(json.dumps({"index": str(index), "kind": seg_index.params.kind, "query": str(query),
                               "query_segments": int(q.z.shape[0]), "recall": _recall_summary(seg_index),
                               "matches": rows}))
        return
    _print_table(rows, query)


def _recall_summary(seg_index) -> dict:
    """The index's measured recall@10 (flat: exact, 1) and the setting it was measured at."""
    params = seg_index.params
    if not params.approximate:
        return {"recall_at_10": 1.0, "exact": True}
    setting = {"nprobe": params.nprobe} if params.kind in ("ivf-flat", "ivf-pq") else {"ef_search": params.ef_search}
    setting["rerank"] = params.rerank
    report = seg_index.recall
    if report is None:
        return {"recall_at_10": None, "exact": False, "measured": False, **setting}
    measured_at = report["value"] == setting.get(report["parameter"]) and report.get("rerank", 10) == params.rerank
    return {"recall_at_10": report["recall"], "set_recall_at_10": report["set_recall"], "exact": False,
            "measured": True, "measured_at": {report["parameter"]: report["value"], "rerank": report.get("rerank", 10)}, "target": report["target"],
            "reached": report["reached"], "queries": report["queries"], "this_session": setting,
            "this_session_measured": measured_at}


def _track_info(store_path: Path):
    """``track -> {clique, title, artist}`` from the store's index (empty strings when unknown)."""
    from clews_pipe.store import open_store

    index = open_store(store_path).index

    def info(track: str) -> dict:
        if track not in index.index:
            return {"clique": "", "title": "", "artist": ""}
        row = index.loc[track]
        return {key: str(row.get(key, "") or "") for key in ("clique", "title", "artist")}

    return info


def _print_table(rows: list[dict], query: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    described = any("clique" in r for r in rows)
    names = ["rank", "track"] + (["clique", "title", "artist"] if described else []) + \
        ["distance", "query time", "candidate time"]
    table = Table(title=f"R_min matches for {query}")
    for name in names:
        table.add_column(name, justify="left" if name in ("track", "clique", "title", "artist") else "right")
    for r in rows:
        info = [r["clique"], r["title"], r["artist"]] if described else []
        table.add_row(str(r["rank"]), r["track"], *info, f"{r['distance']:.4g}",
                      _clock(r["query_start"]), _clock(r["candidate_start"]))
    Console(width=160).print(table)


def _clock(seconds: float) -> str:
    minutes, rest = divmod(seconds, 60.0)
    return f"{int(minutes)}:{rest:04.1f}"


def register(app: typer.Typer) -> None:
    app.add_typer(index_app, name="index")
    app.command("search")(search)
