"""``demo-corpus --kind compositions``: real scores, both renderers, the layout the catalogs read,
determinism, and the musical facts checked independently (music21's own parse, mido's reading of
the MIDI file, an FFT of the rendered audio)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from clews_pipe.datasets.arrange import Part, Performance
from clews_pipe.datasets.compositions import generate_compositions_corpus
from clews_pipe.datasets.harmony import estimate_key
from clews_pipe.datasets.render import choose_renderer, write_midi
from clews_pipe.datasets.scores import Voice
from clews_pipe.datasets.works import chorale_works, choose_works

HAVE_FLUIDSYNTH = choose_renderer("auto").renderer.kind == "fluidsynth"


def _corpus(path, renderer, seed=3):
    return generate_compositions_corpus(path, cliques=2, seed=seed, versions_min=2, versions_max=3,
                                        duration_min=6.0, duration_max=8.0, workers=1, renderer=renderer)


@pytest.mark.parametrize("renderer", ["numpy", pytest.param("fluidsynth", marks=pytest.mark.skipif(
    not HAVE_FLUIDSYNTH, reason="fluidsynth + a GM soundfont not installed (make installs them as root)"))])
def test_compositions_corpus_layout_and_catalog(tmp_path, renderer):
    from clews_pipe.datasets.catalogs import load_catalog

    summary = _corpus(tmp_path / "c", renderer)
    assert summary["renderer"] == renderer and not summary["failed"]
    catalog = load_catalog("discogs-vi", tmp_path / "c", tmp_path / "c" / "audio")
    assert len(catalog) == summary["tracks"] >= 4
    assert set(catalog["clique"].value_counts()) <= {2, 3}
    metas = [json.loads(p.read_text()) for p in (tmp_path / "c" / "audio").rglob("*.meta")]
    assert {m["renderer"] for m in metas} == {renderer}
    assert all(m["title"] and m["composer"] and m["collection"] and m["work"] for m in metas)
    assert {p.suffix for p in (tmp_path / "c" / "audio").rglob("*") if p.suffix != ".meta" and p.is_file()} <= {".mp3", ".ogg", ".flac"}
    import soundfile as sf

    for path in (tmp_path / "c" / "audio").rglob("*.flac"):
        audio, sr = sf.read(path)
        assert sr == 16000 and 6.0 <= len(audio) / sr <= 8.0 and np.abs(audio).max() > 0.1


def test_same_seed_same_corpus_and_versions_differ(tmp_path):
    _corpus(tmp_path / "a", "numpy")
    _corpus(tmp_path / "b", "numpy")
    meta = {p.name: p.read_text() for p in (tmp_path / "a" / "audio").rglob("*.meta")}
    assert meta == {p.name: p.read_text() for p in (tmp_path / "b" / "audio").rglob("*.meta")}
    for split in ("train", "val", "test"):
        name = f"DiscogsVI-YT-20240701-light.json.{split}"
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    versions = [json.loads(m) for m in meta.values()]
    by_work = {}
    for v in versions:
        by_work.setdefault(v["work"], []).append(v["version"])
    for work_versions in by_work.values():  # versions of one work are not copies of each other
        keys = {(v["key_shift"], v["bpm"], tuple(v["programs"])) for v in work_versions}
        assert len(keys) == len(work_versions)


def test_chorale_family_members_share_their_melody():
    """Checked with music21 directly: every member of a family has the same soprano intervals."""
    from music21 import corpus

    family = next(w for w in chorale_works() if len(w.sources) >= 3)
    lines = []
    for source in family.sources[:3]:
        soprano = corpus.parse(source).parts[0].stripTies()
        midi = [n.pitch.midi for n in soprano.recurse().notes]
        merged = [m for k, m in enumerate(midi) if k == 0 or m != midi[k - 1]]
        lines.append([b - a for a, b in zip(merged, merged[1:12])])
    assert lines[0] == lines[1] == lines[2]
    assert len({w.work.sources for w in choose_works(20, 0)}) == 20  # one work per clique


def test_midi_file_holds_the_performance():
    import mido

    part = Part(program=40, onset=np.array([0.0, 0.5, 0.5]), duration=np.array([0.5, 0.25, 1.0]),
                pitch=np.array([60, 64, 67]), velocity=np.array([90, 70, 80]))
    perf = Performance(parts=(part,), seconds=2.0)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        write_midi(perf, Path(tmp) / "x.mid")
        midi = mido.MidiFile(Path(tmp) / "x.mid")
    now, notes, programs = 0.0, [], []
    for message in midi:  # mido yields messages with delta times in seconds
        now += message.time
        if message.type == "program_change":
            programs.append(message.program)
        if message.type == "note_on" and message.velocity > 0:
            notes.append((round(now, 3), message.note, message.velocity))
    assert programs == [40]
    assert notes == [(0.0, 60, 90), (0.5, 64, 70), (0.5, 67, 80)]


@pytest.mark.parametrize("renderer", ["numpy", pytest.param("fluidsynth", marks=pytest.mark.skipif(
    not HAVE_FLUIDSYNTH, reason="fluidsynth not installed"))])
def test_rendered_note_has_its_pitch(renderer):
    from clews_pipe.datasets.render import render

    part = Part(program=73, onset=np.array([0.1]), duration=np.array([1.5]), pitch=np.array([69]), velocity=np.array([100]))
    wave = render(Performance(parts=(part,), seconds=2.0), 16000, choose_renderer(renderer).renderer, reverb=False)
    spectrum = np.abs(np.fft.rfft(wave[1600:24000] * np.hanning(22400)))
    assert abs(np.argmax(spectrum) * 16000 / 22400 - 440.0) < 4.0  # the fundamental: A4 (flute)


def test_key_estimate_of_a_scale():
    g_major = np.array([67, 69, 71, 72, 74, 76, 78, 79, 74, 71, 67])
    voice = Voice(np.arange(len(g_major), dtype=float), np.ones(len(g_major)), g_major)
    key = estimate_key(voice)
    assert (key.tonic, key.minor) == (7, False)


def test_fluidsynth_missing_falls_back_with_a_notice(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    choice = choose_renderer("auto")
    assert choice.renderer.kind == "numpy" and choice.notice.startswith("notice: ") and "\n" not in choice.notice
    from clews_pipe.errors import ClewsError

    with pytest.raises(ClewsError):
        choose_renderer("fluidsynth")


def test_small_cpu_recipe_config_is_valid():
    """configs/small-cpu.yaml loads over the schema, its blocks are whole shingles, and the model
    it describes embeds a batch of shingles shaped as the store's CQT (84 bins, 10 frames/s)."""
    from pathlib import Path

    import torch

    from clews_pipe.model.network import CLEWS
    from clews_pipe.model.run_config import load_train_config

    conf = load_train_config(Path(__file__).resolve().parents[1] / "configs" / "small-cpu.yaml")
    assert conf.data.block_len % conf.data.shingle_len == 0
    assert conf.data.shingle_len == conf.model.shingling.len == conf.eval.shingle_len
    assert conf.model.frontend.keynorm and conf.model.frontend.keynorm_by == "scale-triad"  # key invariance by construction: the recipe relies on it
    model = CLEWS(conf.model).eval()
    frames = int(conf.model.shingling.len * 10)
    with torch.no_grad():
        z = model.embed(torch.rand(2, 2, 84, frames))
    assert z.shape == (2, 2, conf.model.zdim) and torch.isfinite(z).all()


def test_train_only_cliques_leave_the_main_corpus_as_it_was(tmp_path):
    """Adding train-only cliques changes no main clique (its ids, split, audio and .meta) and no
    val / test split; the extras are all in train, use works no main clique uses, and are short."""
    from clews_pipe.datasets.compositions import TrainOnlySpec

    plain = generate_compositions_corpus(tmp_path / "a", cliques=3, seed=5, versions_min=2, versions_max=2,
                                         duration_min=6.0, duration_max=7.0, workers=1, renderer="numpy")
    spec = TrainOnlySpec(cliques=2, versions_min=2, versions_max=3, duration_min=5.0, duration_max=5.5)
    more = generate_compositions_corpus(tmp_path / "b", cliques=3, seed=5, versions_min=2, versions_max=2,
                                        duration_min=6.0, duration_max=7.0, workers=1, renderer="numpy", train_only=spec)
    assert more["train_only_cliques"] == 2 and not more["failed"]
    name = "DiscogsVI-YT-20240701-light.json."
    for split in ("val", "test"):
        assert (tmp_path / "a" / f"{name}{split}").read_text() == (tmp_path / "b" / f"{name}{split}").read_text()
    train_a = json.loads((tmp_path / "a" / f"{name}train").read_text())
    train_b = json.loads((tmp_path / "b" / f"{name}train").read_text())
    assert {k: train_b[k] for k in train_a} == train_a
    extra = {k: v for k, v in train_b.items() if k not in train_a}
    assert len(extra) == 2 and all(2 <= len(v) <= 3 for v in extra.values())
    import soundfile as sf

    for path in (tmp_path / "a" / "audio").rglob("*.*"):  # same versions, same sound (ogg streams carry random serials)
        twin = tmp_path / "b" / path.relative_to(tmp_path / "a")
        if path.suffix in (".meta", ".flac"):
            assert twin.read_bytes() == path.read_bytes()
        elif path.suffix == ".ogg":
            assert np.array_equal(sf.read(twin)[0], sf.read(path)[0])
    main_scores = {json.loads(p.read_text())["version"]["score"] for p in (tmp_path / "a" / "audio").rglob("*.meta")}
    for tracks in extra.values():
        for track in tracks:
            path = next(p for p in (tmp_path / "b" / "audio").rglob(f"{track['youtube_id']}.*") if p.suffix != ".meta")
            assert json.loads(path.with_suffix(".meta").read_text())["version"]["score"] not in main_scores
            if path.suffix in (".flac", ".ogg"):
                assert 5.0 <= sf.info(path).duration <= 5.5 + 0.05


def test_train_only_works_share_no_score_with_the_main_cliques():
    from clews_pipe.datasets.works import choose_train_only_works

    main = choose_works(150, 0)
    extra = choose_train_only_works(300, 0, main)
    used = {s for c in main for w in (c.work,) + c.spares for s in w.sources}
    assert len(extra) == 300 and not used & {s for c in extra for w in (c.work,) + c.spares for s in w.sources}
    assert len({c.work.sources for c in extra}) == 300
    from clews_pipe.errors import ClewsError

    with pytest.raises(ClewsError, match="at most 728 works are left beside the 150 main cliques"):
        choose_train_only_works(1000, 0, main)
