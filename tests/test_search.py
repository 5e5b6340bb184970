"""`earshot search` and the Python API over a small indexed library."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from earshot.cli import main
from earshot.filters import Filters
from earshot.index.build import Indexer
from earshot.index.store import Catalogue
from earshot.search import Searcher, SearchError
from earshot.testing.audio import write_noise, write_tone
from earshot.testing.models import tiny_model
from earshot.testing.serve import index_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("search")
    root = base / "library"
    (root / "birds").mkdir(parents=True)
    (root / "street").mkdir()
    write_tone(root / "birds" / "robin_song.wav", 3.0, 22050, freq=3000.0)
    write_tone(root / "birds" / "owl.flac", 2.0, 44100, channels=2, freq=400.0, seed=1)
    write_noise(root / "street" / "traffic.ogg", 4.0, 32000, seed=2)
    write_tone(root / "street" / "long_hum.wav", 23.0, 16000, freq=120.0, seed=3)
    db = base / "c.sqlite"
    model = index_folder(root, tiny_model_dir, db)
    return root, db, tiny_model_dir, model


@pytest.fixture
def searcher(setup):
    _, db, _, model = setup
    cat = Catalogue(db)
    yield Searcher(cat, model)
    cat.close()


def test_ranking_equals_brute_force_best_window_per_file(searcher):
    cat = searcher.cat
    ids, vectors = cat.vectors()
    vectors = vectors.astype(np.float32)
    rows = cat.segments(ids.tolist())
    rng = np.random.default_rng(0)
    for _ in range(5):
        q = rng.standard_normal(vectors.shape[1]).astype(np.float32)
        q /= np.linalg.norm(q)
        best: dict[str, float] = {}
        for sid, v in zip(ids.tolist(), vectors, strict=True):
            path = rows[sid].path
            best[path] = max(best.get(path, -2.0), float(v @ q))
        expected = sorted(best.values(), reverse=True)[:3]
        hits = searcher.search_vector(q, k=3)
        assert [h.rank for h in hits] == [1, 2, 3]
        assert [h.score for h in hits] == pytest.approx(expected, abs=1e-5)
        assert len({h.path for h in hits}) == 3  # one hit per file
        for h in hits:
            assert best[h.path] == pytest.approx(h.score, abs=1e-5)


def test_long_file_hit_names_its_best_window(searcher):
    cat = searcher.cat
    long_id = cat.file_id_for_path(next(p for p in cat.file_states() if "long_hum" in p))
    segs = cat.file_segments(long_id)
    assert [(s.start_s, s.end_s) for s in segs] == [(0, 10), (5, 15), (10, 20), (15, 23)]
    third = segs[2]
    query = cat.segment_vector(third.segment_id)
    hit = searcher.search_vector(query / np.linalg.norm(query), k=1)[0]
    assert (hit.start_s, hit.end_s, hit.segment_id) == (10, 20, third.segment_id)


def test_filters(searcher, setup):
    root = setup[0]
    q = np.ones(12, dtype=np.float32) / np.sqrt(12)
    birds = searcher.search_vector(q, 10, Filters(folder=str(root / "birds")))
    assert {h.path.split("/")[-1] for h in birds} == {"robin_song.wav", "owl.flac"}
    short = searcher.search_vector(q, 10, Filters(max_duration=3.5))
    assert all(h.duration_s <= 3.5 for h in short) and len(short) == 2
    long = searcher.search_vector(q, 10, Filters(min_duration=10))
    assert [h.path.split("/")[-1] for h in long] == ["long_hum.wav"]
    flac = searcher.search_vector(q, 10, Filters(formats=("FLAC",)))
    assert [h.path.split("/")[-1] for h in flac] == ["owl.flac"]
    assert searcher.search_vector(q, 10, Filters(folder=str(root / "nowhere"))) == []
    dotted = searcher.search_vector(q, 10, Filters(folder=f"{root}/street/../birds/"))
    assert [h.path for h in dotted] == [h.path for h in birds]


def test_an_empty_result_names_the_filter_no_file_passes(searcher, setup):
    root = setup[0]
    text = "a robin sings"
    # dur:>20 passes long_hum alone, ext:flac owl alone: together, nothing.
    for query, filters, said in [
        (f"{text} dur:>20 ext:flac", None,
         "no file passes dur:>=20 ext:flac together, though each alone passes some"),
        (text, Filters(min_duration=9999), "no file passes dur:>=9999"),
        (f"{text} ext:mp3 folder:birds", Filters(max_duration=1),
         "no file passes dur:<=1 ext:mp3"),
        (f'{text} "no such phrase"', None, 'no file passes "no such phrase"'),
        (text, Filters(folder=str(root / "my birds")),
         f'no file passes folder:"{root / "my birds"}"'),
    ]:  # fmt: skip
        results = searcher.search_text(query, 5, filters)
        assert results == [] and searcher.why_empty(results, filters, query) == said, query
        assert results.message(query, reason=said) == f'no match for "{query}": {said}'
    # Filters that pass some file, or results: nothing to blame on them.
    found = searcher.search_text(f"{text} ext:flac", 5)
    assert found and searcher.why_empty(found, None, f"{text} ext:flac") is None
    assert searcher.why_empty([], Filters(formats=("flac",))) is None
    assert searcher.why_empty([], None, text) is None
    beyond = searcher.search_text(f"{text} ext:flac", 5, offset=50)
    assert beyond == [] and searcher.why_empty(beyond, Filters(min_duration=9999)) is None


def test_search_like_leaves_the_example_out(searcher, setup):
    root = setup[0]
    hits = searcher.search_like(root / "birds" / "owl.flac", k=10)
    assert len(hits) == 3 and all("owl" not in h.path for h in hits)
    dotted = searcher.search_like(root / "street" / ".." / "birds" / "." / "owl.flac", k=10)
    assert [h.path for h in dotted] == [h.path for h in hits]  # the same file, spelt otherwise
    span = searcher.search_like(root / "street" / "long_hum.wav", k=2, start=12.0, end=19.0)
    assert len(span) == 2 and all("long_hum" not in h.path for h in span)
    with pytest.raises(SearchError, match="holds no audio"):
        searcher.search_like(root / "birds" / "owl.flac", start=30, end=31)


def test_search_by_example_takes_the_query_syntax_filters(searcher, setup):
    root = setup[0]
    owl = root / "birds" / "owl.flac"
    narrowed = searcher.example_filters("ext:wav,ogg dur:<=10 -traffic")
    assert (narrowed.formats, narrowed.max_duration, narrowed.exclude) == (
        ("wav", "ogg"), 10.0, ("traffic",)
    )  # fmt: skip
    hits = searcher.search_like(owl, k=10, filters=narrowed)
    assert [h.path.split("/")[-1] for h in hits] == ["robin_song.wav"]
    # merged with the caller's filters, both applying
    both = searcher.example_filters("dur:>=1", Filters(folder=str(root / "street")))
    assert (both.folder, both.min_duration) == (str(root / "street"), 1.0)
    assert searcher.example_filters("  ") == Filters()
    with pytest.raises(SearchError, match="filters only.*'a dog barks'"):
        searcher.example_filters("a dog barks ext:wav")
    with pytest.raises(SearchError, match="dur"):
        searcher.example_filters("dur:<<5")


def test_search_like_segment_and_text(searcher):
    sid = int(searcher.cat.vectors()[0][0])
    hits = searcher.search_like_segment(sid, k=3)
    assert hits and all(h.file_id != searcher.cat.segments([sid])[sid].file_id for h in hits)
    with pytest.raises(SearchError, match="no segment with id"):
        searcher.search_like_segment(10**9)
    text_hits = searcher.search_text("a robin sings", k=2)
    assert len(text_hits) == 2
    with pytest.raises(SearchError, match="empty query"):
        searcher.search_text("   ")


def test_hybrid_brings_keyword_matches_in(searcher, setup):
    hits = searcher.search_text("robin", k=4, hybrid=True)
    assert any("robin_song" in h.path for h in hits)
    street = searcher.search_text(
        "robin", k=4, hybrid=True, filters=Filters(folder=str(setup[0] / "street"))
    )
    assert street and all("/street/" in h.path for h in street)
    assert all(a.score >= b.score for a, b in itertools.pairwise(hits))
    # What ranks is the fused score; what a person reads is each file's best window's cosine,
    # the score the same search by sound alone gives that file, and its span's score.
    by_sound = {h.path: h.score for h in searcher.search_text("robin", k=50, hybrid=False)}
    for h in hits:
        assert h.score < 0.05 and h.similarity == pytest.approx(by_sound[h.path], abs=1e-6)
        assert h.as_dict()["spans"][0]["score"] == pytest.approx(h.similarity, abs=1e-6)


def test_hybrid_cli_lines_show_the_similarity(setup, capsys):
    _, db, model_dir, _ = setup
    args = ["search", "robin", "-k", "3", "--hybrid", "--db", str(db), "--model", str(model_dir)]
    assert main([*args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hybrid"] and doc["hits"]
    assert main(args) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln[:5].strip().endswith(".")]
    assert [ln.split()[1] for ln in lines] == [f"{h['similarity']:+.3f}" for h in doc["hits"]]
    # a hit good only by its name says so, under its line
    by_name = [h["name"] for h in doc["hits"] if h["by_name"]]
    assert by_name, doc["hits"]
    assert main(args) == 0
    said, last = [], None
    for ln in capsys.readouterr().out.splitlines():
        if ln[:5].strip().endswith("."):
            last = ln.split()[-2]  # the hit's path
        elif ln.strip() == "good by its name or description, not by its sound":
            said.append(last.rsplit("/", 1)[-1])
    assert said == by_name


def test_new_files_are_searchable_without_restarting(setup, tmp_path):
    root, db, _, model = setup
    with Catalogue(db) as cat:
        searcher = Searcher(cat, model)
        before = len(searcher.search_vector(np.ones(12, np.float32) / np.sqrt(12), 50))
        extra = root / "street" / "added_later.wav"
        write_tone(extra, 1.0, 16000, freq=800.0, seed=9)
        Indexer(cat, model, workers=0, progress=False).run([str(root)])
        after = searcher.search_vector(np.ones(12, np.float32) / np.sqrt(12), 50)
        assert len(after) == before + 1
        extra.unlink()
        Indexer(cat, model, workers=0, progress=False).run([str(root)])
        final = searcher.search_vector(np.ones(12, np.float32) / np.sqrt(12), 50)
        assert len(final) == before and not any("added_later" in h.path for h in final)


def test_model_must_match_the_catalogue(setup):
    _, db, _, _ = setup
    with Catalogue(db) as cat, pytest.raises(SearchError, match="built with model"):
        Searcher(cat, tiny_model(seed=7))


def test_cli_search(setup, capsys, tmp_path):
    root, db, model_dir, _ = setup
    args = ["--db", str(db), "--model", str(model_dir)]
    assert main(["search", "a robin sings", "-k", "2", "--json", *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert len(doc["hits"]) == 2 and {"path", "start", "end", "score"} <= set(doc["hits"][0])
    assert main(["search", "a robin sings", *args]) == 0
    assert "1. " in capsys.readouterr().out
    # Nothing left by the filters: one line says so (it used to be two, "no matches" first).
    assert main(["search", "a robin sings", "--min-duration", "9999", *args]) == 0
    why = "no file passes dur:>=9999"
    assert capsys.readouterr().out == f'no match for "a robin sings": {why}\n'
    assert main(["search", "a robin sings ext:mp3", "--json", *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["hits"] == []
    assert doc["message"].endswith(": no file passes ext:mp3")
    assert main(["search", "--like", str(root / "birds" / "owl.flac"), "ext:mp3", *args]) == 0
    assert capsys.readouterr().out == "no match: no file passes ext:mp3\n"
    assert main(["search", "a robin sings", "--offset", "500", *args]) == 0
    assert capsys.readouterr().out == "no matches\n"  # a page past the last
    # Without --model, the catalogue's own model (recorded when indexing) is used.
    assert main(["search", "a robin sings", "--db", str(db), "--model", ""]) == 0
    assert "1. " in capsys.readouterr().out
    queries = tmp_path / "q.txt"
    queries.write_text("a robin sings\n\nheavy traffic\n")
    assert main(["search", "--queries", str(queries), "-k", "3", *args]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [x["query"] for x in lines] == ["a robin sings", "heavy traffic"]
    assert main(["search", "--like", str(root / "birds" / "owl.flac"), "--json", *args]) == 0
    assert all("owl" not in h["path"] for h in json.loads(capsys.readouterr().out)["hits"])
    assert (
        main(["search", "x", "--folder", str(root / "street"), "--format", "wav", "--json", *args])
        == 0
    )
    assert [h["path"].split("/")[-1] for h in json.loads(capsys.readouterr().out)["hits"]] == [
        "long_hum.wav"
    ]
    assert (
        main(["search", "x", "--db", str(tmp_path / "none.sqlite"), "--model", str(model_dir)]) == 1
    )
    assert "no catalogue" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["search", "x", "--like", "y.wav", *args])
    assert "filters only" in capsys.readouterr().err
    # beside an example, a query of fields narrows it
    owl = str(root / "birds" / "owl.flac")
    assert main(["search", "ext:wav dur:<5", "--like", owl, "--json", *args]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [h["path"].split("/")[-1] for h in doc["hits"]] == ["robin_song.wav"]
    assert (doc["query"], doc["q"]) == (owl, "ext:wav dur:<5")
    sid = str(int(Catalogue(db).vectors()[0][0]))
    assert main(["search", "dur:>0 -traffic", "--like-id", sid, "--json", *args]) == 0
    assert all("traffic" not in h["path"] for h in json.loads(capsys.readouterr().out)["hits"])


def test_python_api(setup, tmp_path):
    import earshot

    root, _, model_dir, _ = setup
    with earshot.Index(tmp_path / "api.sqlite", model=str(model_dir)) as idx:
        summary = idx.add(root / "birds")
        assert summary.added == 2
        hits = idx.search("a bird", k=5)
        assert {h.path.split("/")[-1] for h in hits} == {"robin_song.wav", "owl.flac"}
        like = idx.search_like(root / "birds" / "owl.flac", k=5, formats="wav")
        assert [h.path.split("/")[-1] for h in like] == ["robin_song.wav"]
        assert idx.search_like(root / "birds" / "owl.flac", k=5, query="ext:wav") == like
        with pytest.raises(SearchError, match="filters only"):
            idx.search_like(root / "birds" / "owl.flac", query="a bird")
        assert idx.stats()["files_ok"] == 2
        with pytest.raises(TypeError, match="unknown filter"):
            idx.search("a bird", colour="red")
