"""Search for sound designers: confidence bands, the query syntax against a catalogue, several
spans per file, duplicates grouped, paging and sorting (earshot.search), in the CLI too."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from earshot.cli import main
from earshot.confidence import DEFAULT, load_calibrations
from earshot.filters import Filters
from earshot.hits import Results, trim_weak
from earshot.index.store import Catalogue
from earshot.model.io import model_id
from earshot.search import Searcher, SearchError
from earshot.testing.audio import write_noise, write_tone
from earshot.testing.models import tiny_model
from earshot.testing.serve import index_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_model_dir):
    base = tmp_path_factory.mktemp("features")
    root = base / "library"
    for sub in ("sfx/foley", "ambience/copy", "long"):
        (root / sub).mkdir(parents=True)
    write_tone(root / "sfx/foley/door_slam.wav", 3.0, 44100, freq=3000.0)
    write_tone(root / "sfx/foley/DoorCreak_old.wav", 2.0, 48000, channels=2, freq=800.0, seed=1)
    write_noise(root / "ambience/rain_roof.flac", 6.0, 48000, channels=2, seed=2)
    shutil.copyfile(root / "ambience/rain_roof.flac", root / "ambience/copy/rain_again.flac")
    write_tone(root / "long/hum_long.wav", 40.0, 16000, freq=120.0, seed=3)
    model_dir = base / "model"  # a copy of its own: tests here write calibration.json into it
    shutil.copytree(tiny_model_dir, model_dir)
    db = base / "c.sqlite"
    model = index_folder(root, model_dir, db)
    return root, db, model_dir, model


@pytest.fixture
def searcher(setup):
    _, db, _, model = setup
    cat = Catalogue(db)
    yield Searcher(cat, model)
    cat.close()


def _names(hits) -> list[str]:
    return [h.path.rsplit("/", 1)[-1] for h in hits]


def _unit(v):
    return v / np.linalg.norm(v)


def test_every_hit_has_confidence_band_spans_and_file_facts(searcher):
    hits = searcher.search_text("a door slams", k=10)
    assert isinstance(hits, Results) and hits
    for h in hits:
        d = h.as_dict()
        assert 0.0 <= d["confidence"] <= 1.0 and d["band"] in ("good", "weak", "none")
        # its best window's cosine: "door" names files, so this search is hybrid and `score`
        # (what ranks) is the fused one
        assert d["spans"][0] == {"start": d["start"], "end": d["end"], "score": d["similarity"]}
        assert isinstance(d["more_spans"], int) and isinstance(d["also_at"], list)
    by_name = {n: h for n, h in zip(_names(hits), hits, strict=True)}
    assert (by_name["DoorCreak_old.wav"].sample_rate, by_name["DoorCreak_old.wav"].channels) == (
        48000,
        2,
    )
    assert by_name["door_slam.wav"].as_dict()["sample_rate"] == 44100
    # Confidence rises with the score within one query (the calibration is monotonic here).
    ranked = sorted(hits, key=lambda h: -h.score)
    assert [h.confidence for h in ranked] == sorted((h.confidence for h in hits), reverse=True)


def test_byte_identical_files_are_one_hit_with_also_at(searcher, setup):
    root = setup[0]
    rain = searcher.cat.file_id_for_path(str(root / "ambience/rain_roof.flac"))
    query = _unit(searcher.cat.segment_vector(searcher.cat.file_segments(rain)[0].segment_id))
    hits = searcher.search_vector(query, k=10)
    names = _names(hits)
    assert names.count("rain_roof.flac") + names.count("rain_again.flac") == 1
    top = hits[0]
    copies = {str(root / "ambience/copy/rain_again.flac"), str(root / "ambience/rain_roof.flac")}
    assert rain is not None and top.path in copies
    assert top.also_at == tuple(copies - {top.path})
    assert top.as_dict()["also_at"] == list(copies - {top.path})
    assert len(hits) == 4  # five files, one of them a copy


def test_spans_are_the_files_best_non_overlapping_windows(searcher, setup):
    cat = searcher.cat
    fid = cat.file_id_for_path(str(setup[0] / "long/hum_long.wav"))
    segments = cat.file_segments(fid)
    query = _unit(cat.segment_vector(segments[3].segment_id))
    hit = next(h for h in searcher.search_vector(query, k=10, spans=3) if h.file_id == fid)
    assert len(hit.spans) == 3
    assert hit.spans[0] == (hit.start_s, hit.end_s, hit.score)
    for i, (a0, a1, _) in enumerate(hit.spans):
        for b0, b1, _ in hit.spans[i + 1 :]:
            assert a1 <= b0 or b1 <= a0  # no two overlap
    # Best first, and the scores are the windows' cosines.
    vectors = {s.segment_id: cat.segment_vector(s.segment_id) for s in segments}
    by_span = {(s.start_s, s.end_s): float(vectors[s.segment_id] @ query) for s in segments}
    assert [sc for *_, sc in hit.spans] == pytest.approx(
        [by_span[(a, b)] for a, b, _ in hit.spans], abs=1e-4
    )
    assert hit.score == pytest.approx(max(by_span.values()), abs=1e-4)
    rest = [sc for *_, sc in hit.spans[1:]]
    assert rest == sorted(rest, reverse=True)
    one = next(h for h in searcher.search_vector(query, k=10) if h.file_id == fid)
    assert len(one.spans) == 1
    with pytest.raises(SearchError, match="spans must be within"):
        searcher.search_vector(query, k=3, spans=0)


def test_more_spans_counts_further_good_windows(searcher, setup):
    cat = searcher.cat
    fid = cat.file_id_for_path(str(setup[0] / "long/hum_long.wav"))
    query = _unit(cat.segment_vector(cat.file_segments(fid)[0].segment_id))
    from earshot.confidence import Calibration

    searcher.calibrations = {k: Calibration(0.0, 0.0, 5.0) for k in ("text", "example")}
    hit = next(h for h in searcher.search_vector(query, k=10, spans=2) if h.file_id == fid)
    # 40 s in 10 s windows, hop 5: four non-overlapping ones; two listed, two more, all good.
    assert len(hit.spans) == 2 and hit.more_spans == 2
    searcher.calibrations = {k: Calibration(0.0, 0.0, -5.0) for k in ("text", "example")}
    hit = next(h for h in searcher.search_vector(query, k=10, spans=2) if h.file_id == fid)
    assert hit.more_spans == 0 and hit.band == "none"


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("door ext:wav", {"door_slam.wav", "DoorCreak_old.wav", "hum_long.wav"}),
        ("sound -slam -hum", {"DoorCreak_old.wav", "rain_roof.flac"}),
        ('sound "door creak"', {"DoorCreak_old.wav"}),
        ("sound sr:>=48000", {"DoorCreak_old.wav", "rain_roof.flac"}),
        ("sound ch:2 ext:flac", {"rain_roof.flac"}),
        ("sound ch:mono", {"door_slam.wav", "hum_long.wav"}),
        ("sound folder:foley", {"door_slam.wav", "DoorCreak_old.wav"}),
        ("sound folder:sfx/foley dur:<2.5", {"DoorCreak_old.wav"}),
        ("sound folder:copy", {"rain_again.flac"}),
        ("sound dur:>=30", {"hum_long.wav"}),
        ("sound dur:2..3", {"door_slam.wav", "DoorCreak_old.wav"}),
        ("sound tag:creak", {"DoorCreak_old.wav"}),  # no sound tags: matched as a keyword
        ("sound -door folder:foley", set()),
    ],
)
def test_query_syntax_filters_the_catalogue(searcher, query, expected):
    assert set(_names(searcher.search_text(query, k=10))) == expected


def test_query_syntax_merges_with_the_callers_filters(searcher, setup):
    hits = searcher.search_text("sound ext:wav", k=10, filters=Filters(max_duration=5))
    assert set(_names(hits)) == {"door_slam.wav", "DoorCreak_old.wav"}
    with pytest.raises(SearchError, match="cannot read 'dur:<abc'"):
        searcher.search_text("door dur:<abc")
    with pytest.raises(SearchError, match="two folders"):
        searcher.search_text(f"x folder:{setup[0]}/sfx", filters=Filters(folder=str(setup[0])))


def test_a_query_of_only_operators(searcher):
    # An exact phrase alone ranks by keywords; fields alone have nothing to rank by.
    assert _names(searcher.search_text('"door slam"', k=5)) == ["door_slam.wav"]
    with pytest.raises(SearchError, match="only filters"):
        searcher.search_text("ext:wav dur:<3")


def test_paging_is_stable_and_says_whether_more_follow(searcher):
    q = np.ones(12, dtype=np.float32) / np.sqrt(12)
    every = searcher.search_vector(q, k=10)
    first, second = searcher.search_vector(q, k=2), searcher.search_vector(q, k=2, offset=2)
    assert [h.file_id for h in first + second] == [h.file_id for h in every[:4]]
    assert [h.rank for h in second] == [3, 4]
    assert first.more and second.offset == 2
    last = searcher.search_vector(q, k=2, offset=3)
    assert len(last) == 1 and not last.more
    assert searcher.search_vector(q, k=2, offset=50) == []


def test_sorting_reorders_the_relevant_set(searcher):
    q = np.ones(12, dtype=np.float32) / np.sqrt(12)
    by_name = searcher.search_vector(q, k=10, sort="name")
    assert _names(by_name) == sorted(_names(by_name), key=str.casefold)
    by_length = searcher.search_vector(q, k=10, sort="duration")
    assert [h.duration_s for h in by_length] == sorted(h.duration_s for h in by_length)
    by_date = searcher.search_vector(q, k=10, sort="date")
    assert [h.mtime_ns for h in by_date] == sorted((h.mtime_ns for h in by_date), reverse=True)
    page2 = searcher.search_vector(q, k=2, offset=2, sort="name")
    assert _names(page2) == _names(by_name)[2:4]
    with pytest.raises(SearchError, match="sort must be one of"):
        searcher.search_vector(q, k=2, sort="size")


def test_the_other_sorts_put_the_good_matches_first(searcher, monkeypatch):
    # "thunder" by duration: the thunder recordings shortest first, not the catalogue's
    # shortest blips (which the 200 best by score hold too, as weak or no matches).
    from dataclasses import replace

    def rate(hits, query, kind):  # the long files match well; the door sounds do not
        band = {"hum_long.wav": "good", "rain_roof.flac": "good", "door_slam.wav": "weak"}
        return [replace(h, band=band.get(_names([h])[0], "none"), confidence=0.5) for h in hits]

    monkeypatch.setattr(searcher, "_rate", rate)
    q = np.ones(12, dtype=np.float32) / np.sqrt(12)
    by_length = searcher.search_vector(q, k=10, sort="duration")
    assert _names(by_length) == ["rain_roof.flac", "hum_long.wav", "door_slam.wav",
                                 "DoorCreak_old.wav"]  # fmt: skip
    assert _names(searcher.search_vector(q, k=10, sort="name"))[:2] == [
        "hum_long.wav",
        "rain_roof.flac",
    ]
    assert _names(trim_weak(by_length)) == ["rain_roof.flac", "hum_long.wav"]
    assert _names(searcher.search_vector(q, k=1, offset=1, sort="duration")) == ["hum_long.wav"]


def test_calibration_file_in_the_model_folder_is_used_when_it_names_the_model(setup, tmp_path):
    _, _, model_dir, model = setup
    assert load_calibrations(model)["text"] == DEFAULT  # none written yet
    target = model_dir / "calibration.json"
    doc = {"model_id": model_id(model), "text": {"a": 0, "b": 0, "c": -4}}
    target.write_text(json.dumps(doc))
    try:
        cal = load_calibrations(model)
        assert (cal["text"].c, cal["example"]) == (-4.0, DEFAULT)
        assert cal["text"].band(cal["text"].confidence(0.9, 9)) == "none"
        target.write_text(json.dumps({**doc, "model_id": "0" * 16}))  # another model's
        assert load_calibrations(model)["text"] == DEFAULT
        target.write_text("{not json")
        assert load_calibrations(model)["text"] == DEFAULT
    finally:
        target.unlink()


def test_message_and_weak_tail(searcher):
    from earshot.confidence import Calibration

    searcher.calibrations = {k: Calibration(0.0, 0.0, -1.0) for k in ("text", "example")}
    hits = searcher.search_text("a door slams", k=3, hybrid=False)  # a name holds both words
    assert {h.band for h in hits} == {"weak"} and hits.best_band() == "weak"
    assert hits.message("a door slams") == (
        'no good match for "a door slams": the best is weak (0.27); '
        "try other words or search by example"
    )
    assert trim_weak(hits) == hits  # nothing good: the best candidates stay, marked
    mixed = Results.of([*hits[:1], *hits[1:]])
    from dataclasses import replace

    mixed[0] = replace(mixed[0], band="good", confidence=0.9)
    assert [h.band for h in trim_weak(mixed)] == ["good"]
    # A weak hit ranked above a good one (fusion can rank it so) stays: the list keeps its
    # ranks 1, 2...; only the weak tail after the last good hit goes. Sorted by name, every
    # hit that is not good goes.
    middle = Results.of([*hits])
    middle[1] = replace(middle[1], band="good", confidence=0.9)
    assert [h.rank for h in trim_weak(middle)] == [h.rank for h in hits[:2]]
    assert [h.band for h in trim_weak(middle)] == ["weak", "good"]
    middle.sort = "name"
    assert [h.band for h in trim_weak(middle)] == ["good"]
    assert searcher.search_text("a door slams", k=3, hybrid=False, sort="name").sort == "name"
    assert mixed.message("x") is None
    assert Results.of([]).message("x") == 'no match for "x"'


def test_semantic_negation_penalises_windows_like_the_negated_text(searcher):
    searcher.negation_weight = 0.5
    plan = searcher.plan_text("a door slams, no rain")
    assert (plan.text, plan.negative) == ("a door slams", "rain")
    pos, neg = np.asarray(searcher.model.encode_text(["a door slams", "rain"]))
    hits = searcher.search_text("a door slams, no rain", k=10, hybrid=False)  # names hold "door"
    ids, vectors = searcher.cat.vectors()
    rows = searcher.cat.segments(ids.tolist())
    best: dict[int, float] = {}
    for sid, v in zip(ids.tolist(), vectors.astype(np.float32), strict=True):
        s = float(v @ pos) - 0.5 * max(0.0, float(v @ neg))
        fid = rows[sid].file_id
        best[fid] = max(best.get(fid, -9.0), s)
    for h in hits:
        assert h.score == pytest.approx(best[h.file_id], abs=1e-4)
    searcher.negation_weight = 0.0
    assert searcher.plan_text("a door slams, no rain").text == "a door slams, no rain"


def test_cli_prints_bands_spans_duplicates_and_a_hint(setup, capsys):
    root, db, model_dir, _ = setup
    # the sound ranking alone: these names hold "door", which makes "door" hybrid by default
    base = ["search", "--db", str(db), "--model", str(model_dir), "--no-hybrid"]
    assert main([*base, "a low hum", "--spans", "2", "--all"]) == 0
    out = capsys.readouterr().out
    assert "also at " + str(root / "ambience/copy/rain_again.flac") in out
    assert "  also 0:" in out  # a second span of the long file
    assert any(b in out for b in (" good ", " weak ", " none "))
    assert main([*base, "sound folder:foley -slam", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [h["name"] for h in doc["hits"]] == ["DoorCreak_old.wav"]
    assert {"band", "message", "offset", "more", "total_estimate"} <= set(doc)
    assert main([*base, "door", "--sort", "name", "-k", "2", "--offset", "1", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["offset"] == 1 and [h["rank"] for h in doc["hits"]] == [2, 3]
    assert main([*base, "door dur:<abc"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("earshot: error: cannot read 'dur:<abc'") and "Traceback" not in err


def test_cli_says_when_nothing_is_good(setup, capsys):
    _, db, model_dir, model = setup
    target = model_dir / "calibration.json"
    flat = {"a": 0, "b": 0, "c": -1}
    target.write_text(json.dumps({"model_id": model_id(model), "text": flat, "example": flat}))
    try:
        cmd = ["search", "--db", str(db), "--model", str(model_dir), "--no-hybrid", "a door"]
        assert main(cmd) == 0
        out = capsys.readouterr().out.strip().splitlines()
        example = next(line.split()[-2] for line in out if line.strip()[:2] == "1.")
        like = ["search", "--db", str(db), "--model", str(model_dir), "--like", str(example)]
        assert main(like) == 0
    finally:
        target.unlink()
    assert out[-1] == (
        'no good match for "a door": the best is weak (0.27); try other words or --like FILE'
    )
    # By example, the hint does not send the user to --like, what they just did.
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1].startswith("no good match: the best is ") and out[-1].endswith(
        "; try another example, or words"
    ), out


def test_many_copies_of_one_file_do_not_crowd_out_the_page(tmp_path):
    from earshot.index.decoding import read_record
    from earshot.index.scan import ScanEntry
    from earshot.search import MAX_ALSO_AT

    model = tiny_model(joint_dim=12)
    template = write_tone(tmp_path / "t.wav", 0.05, 8000)
    st = template.stat()
    record = read_record(ScanEntry(str(template), st.st_size, st.st_mtime_ns), "same")
    rng = np.random.default_rng(0)
    copy_vector = _unit(rng.standard_normal(12)).astype(np.float32)
    others = [_unit(copy_vector + 0.5 * rng.standard_normal(12)) for _ in range(5)]
    with Catalogue(tmp_path / "c.sqlite") as cat:
        cat.bind_model(model_id(model), 12, {})
        with cat.batch():
            for n in range(200):  # 200 byte-identical files: one hit
                rec = record.__class__(**{**record.__dict__, "path": f"/lib/copy{n:03d}.wav"})
                cat.put_file(rec, [(0.0, 1.0, copy_vector)])
            for n, v in enumerate(others):
                rec = record.__class__(
                    **{**record.__dict__, "path": f"/lib/other{n}.wav", "content_hash": f"o{n}"}
                )
                cat.put_file(rec, [(0.0, 1.0, v.astype(np.float32))])
        hits = Searcher(cat, model).search_vector(copy_vector, k=4)
    assert len(hits) == 4
    assert hits[0].path == "/lib/copy000.wav" and len(hits[0].also_at) == MAX_ALSO_AT
    assert all("/other" in h.path for h in hits[1:])
