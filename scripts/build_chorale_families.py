"""Write src/clews_pipe/datasets/chorale_families.json: music21's four-part Bach chorales grouped
into melody families (same :func:`clews_pipe.datasets.scores.melody_signature`), with their titles
from music21's Riemenschneider/BWV list. Run once per music21 release (about 40 s):

    PYTHONPATH=src .venv/bin/python scripts/build_chorale_families.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> int:
    import music21
    from music21 import corpus
    from music21.corpus.chorales import ChoraleListRKBWV

    from clews_pipe.datasets.scores import melody_signature, parse_piece

    titles = {str(k): v["title"] for k, v in ChoraleListRKBWV().byBWV.items()}
    root = Path(music21.__file__).resolve().parent / "corpus"
    families: dict[tuple, list] = {}
    for path in sorted(corpus.getComposer("bach")):
        rel = str(Path(path).resolve().relative_to(root))
        if not rel.endswith(".mxl"):
            continue
        piece = parse_piece(rel)
        if len(piece.voices) != 4:  # chorales are four-part; skip the rest of Bach's corpus
            continue
        bwv = Path(rel).name[len("bwv"):-len(".mxl")]
        title = titles.get(bwv) or titles.get(bwv.split("-")[0]) or f"Chorale BWV {bwv}"
        families.setdefault(melody_signature(piece), []).append({"source": rel, "bwv": bwv, "title": title})
    out = Path(__file__).resolve().parent.parent / "src/clews_pipe/datasets/chorale_families.json"
    payload = {"music21": music21.__version__, "rule": "same first 11 soprano intervals (repeated notes merged)",
               "families": sorted(families.values(), key=lambda f: f[0]["source"])}
    out.write_text(json.dumps(payload, indent=1, ensure_ascii=False) + "\n")
    sizes = [len(f) for f in families.values()]
    print(json.dumps({"families": len(sizes), "chorales": sum(sizes), "multi": sum(s > 1 for s in sizes)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
