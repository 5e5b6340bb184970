"""Embedded metadata (earshot.audio.metadata): read from BWF bext / iXML / RIFF INFO chunks,
ID3, Vorbis comments, MP4 atoms and UCS file names; hostile chunks give nothing, never an
error; stored by the catalogue (schema v4), searched by keyword and hybrid search, carried by
hits (`meta`) in the CLI and the API; a v3 catalogue upgraded reads the metadata of its
unchanged files without embedding them again."""

from __future__ import annotations

import json
import sqlite3
import struct

import numpy as np
import pytest

from earshot.audio.metadata import parse_ucs, read_metadata
from earshot.audio.metadata_record import MAX_VALUE_CHARS, clean
from earshot.filters import Filters
from earshot.index.build import Indexer
from earshot.index.store import Catalogue
from earshot.search import Searcher
from earshot.testing.audio import write_av, write_noise, write_tone
from earshot.testing.metadata import (
    add_bext,
    bext_chunk,
    chunk,
    info_chunk,
    ixml_chunk,
    write_bwf,
    write_id3,
    write_mp4_tags,
    write_vorbis_tags,
    write_wav_chunks,
)

# --- reading ---------------------------------------------------------------------------------


def test_bwf_bext_ixml_and_info_are_read_into_one_record(tmp_path):
    ixml = ixml_chunk(
        {"NOTE": "take 3 was the good one", "SCENE": "12", "TAKE": "3"},
        {"FXNAME": "Creak Open", "CATEGORY": "DOORS", "SUBCATEGORY": "Wood",
         "KEYWORDS": "door, creak; hinge", "LIBRARY": "Old House"},
    )  # fmt: skip
    path = write_bwf(
        tmp_path / "take.wav",
        "Old wooden door creaks open slowly",
        "Jane Doe",
        ixml=ixml,
        info={"INAM": "Creak", "ICMT": "recorded in the attic", "IKEY": "wood;door", "IART": "JD"},
    )
    m = read_metadata(path).as_dict()
    assert m["description"] == "Old wooden door creaks open slowly"
    assert m["originator"] == "Jane Doe"
    assert (m["fx_name"], m["category"], m["subcategory"]) == ("Creak Open", "DOORS", "Wood")
    assert m["keywords"] == ["door", "creak", "hinge", "wood"]  # iXML's, then INFO's new one
    assert m["title"] == "Creak" and m["artist"] == "JD" and m["library"] == "Old House"
    assert m["comment"] == "take 3 was the good one"  # iXML NOTE, read before INFO's ICMT
    assert m["sources"] == ["bext", "ixml", "info"]
    raw = m["raw"]
    assert (
        raw["bext:Description"] == m["description"] and raw["info:ICMT"] == "recorded in the attic"
    )
    assert raw["ixml:SCENE"] == "12" and raw["ixml:TAKE"] == "3"
    assert "ucs" not in m


def test_bext_fields_and_a_free_text_ixml_user_block(tmp_path):
    body = bext_chunk("Thunder, distant", "Recorder X", "REF123", "2024-05-01", "12:30:00",
                      "A=PCM,F=48000,W=24", time_reference=48000 * 3600)  # fmt: skip
    ixml = ixml_chunk(user="Description: rolling thunder over hills\nKeywords: storm, thunder")
    path = write_wav_chunks(tmp_path / "t.wav", [chunk(b"bext", body), chunk(b"iXML", ixml)])
    m = read_metadata(path).as_dict()
    assert m["description"] == "Thunder, distant"  # bext first
    assert m["date"] == "2024-05-01 12:30:00" and m["keywords"] == ["storm", "thunder"]
    assert m["raw"]["bext:OriginatorReference"] == "REF123"
    assert m["raw"]["bext:TimeReference"] == str(48000 * 3600)
    assert m["raw"]["bext:CodingHistory"] == "A=PCM,F=48000,W=24"


def test_non_utf8_bytes_read_as_latin1(tmp_path):
    path = write_bwf(tmp_path / "x.wav", "Caf\xe9 ambience, cr\xe8me".encode("latin-1"),
                     info={"INAM": "Ni\xf1o".encode("latin-1")})  # fmt: skip
    m = read_metadata(path).as_dict()
    assert m["description"] == "Café ambience, crème" and m["title"] == "Niño"


def test_id3_in_mp3_wav_and_aiff(tmp_path):
    frames = {"TIT2": "Glass smash", "TPE1": "Foley Co", "COMM": "dropped from 2 m",
              "TXXX:DESCRIPTION": "a wine glass shatters on tiles", "TXXX:KEYWORDS": "glass;break",
              "TALB": "Kitchen Library"}  # fmt: skip
    for name in ("smash.mp3", "smash.wav", "smash.aiff"):
        path = write_tone(tmp_path / name, 0.5, 16000)
        write_id3(path, frames, kind=name.rsplit(".", 1)[1].replace("mp3", "mp3"))
        m = read_metadata(path).as_dict()
        assert m["description"] == "a wine glass shatters on tiles", name
        assert (m["title"], m["artist"], m["comment"]) == (
            "Glass smash",
            "Foley Co",
            "dropped from 2 m",
        )
        assert m["keywords"] == ["glass", "break"] and m["library"] == "Kitchen Library"
        assert "id3" in m["sources"]


def test_vorbis_comments_in_flac_ogg_and_opus(tmp_path):
    for name in ("rain.flac", "rain.ogg", "rain.opus"):
        path = write_tone(tmp_path / name, 0.5, 48000 if name.endswith("opus") else 16000)
        write_vorbis_tags(path, {"DESCRIPTION": "rain on a tin roof", "TITLE": "Rain",
                                 "KEYWORDS": ["rain", "roof"], "CATEGORY": "WEATHER"})  # fmt: skip
        m = read_metadata(path).as_dict()
        assert m["description"] == "rain on a tin roof", name
        assert m["keywords"] == ["rain", "roof"] and m["category"] == "WEATHER"
        assert m["title"] == "Rain" and m["sources"] == ["vorbis"]


def test_mp4_atoms_in_m4a(tmp_path):
    path = write_av(tmp_path / "bird.m4a", 0.5, 16000)
    atoms = {"\xa9nam": "Robin", "desc": "a robin sings at dawn", "\xa9cmt": "garden",
             "----:com.apple.iTunes:KEYWORDS": "bird, song"}  # fmt: skip
    write_mp4_tags(path, atoms)
    m = read_metadata(path).as_dict()
    assert (m["title"], m["description"], m["comment"]) == (
        "Robin",
        "a robin sings at dawn",
        "garden",
    )
    assert m["keywords"] == ["bird", "song"] and m["sources"] == ["mp4"]


def test_ucs_file_names():
    assert parse_ucs("DOORWood_Creak Slam_JD_MyLib.wav") == {
        "cat_id": "DOORWood", "category": "DOOR", "subcategory": "Wood",
        "fx_name": "Creak Slam", "creator_id": "JD", "source_id": "MyLib",
    }  # fmt: skip
    extra = parse_ucs("AMBForst-Night_Crickets and owl_AB_Woods_take 2.flac")
    assert extra["category"] == "AMB" and extra["subcategory"] == "Forst"
    assert extra["user_category"] == "Night" and extra["user_data"] == "take 2"
    for name in ("dog_bark_01_x.wav", "README_File_A_B.wav", "DogBark_x_y_z.wav",
                 "DOORWood_Creak Slam.wav", "DOORWood_Creak_JD.wav", "DOOR_Creak_JD_Lib.wav",
                 "DOORWood__JD_Lib.wav", "12345_a_b_c.wav"):  # fmt: skip
        assert parse_ucs(name) is None, name


def test_a_ucs_name_fills_the_record(tmp_path):
    path = write_tone(tmp_path / "DOORWood_Creak Slam_JD_MyLib.wav", 0.3, 16000)
    m = read_metadata(path).as_dict()
    assert m["ucs"]["fx_name"] == m["fx_name"] == "Creak Slam"
    assert (m["cat_id"], m["category"], m["subcategory"]) == ("DOORWood", "DOOR", "Wood")
    assert m["sources"] == ["ucs"]
    assert read_metadata(write_tone(tmp_path / "plain.wav", 0.3, 16000)).as_dict() == {}


# --- hostile files ---------------------------------------------------------------------------


def test_an_rf64_file_is_read_past_its_placeholder_sized_audio(tmp_path):
    # RF64 (and BW64) write 0xFFFFFFFF as the data chunk's size and the real one in ds64: a
    # description after the audio is found only by stepping by the 64-bit size.
    path = write_noise(tmp_path / "long.wav", 0.5, 16000, format="RF64")
    data = path.read_bytes()
    at = data.index(b"data")
    assert data[at + 4 : at + 8] == b"\xff\xff\xff\xff"
    path.write_bytes(data + chunk(b"LIST", b"INFO" + chunk(b"INAM", b"Rain on a tin roof\x00")))
    m = read_metadata(path).as_dict()
    assert m["title"] == "Rain on a tin roof" and m["sources"] == ["info"]


def test_hostile_chunks_give_no_metadata_not_an_error(tmp_path):
    good = chunk(b"bext", bext_chunk("kept"))
    cases = {
        # a bext that says it is 4 GB long: not read; the walk stops there
        "huge": [chunk(b"bext", bext_chunk("lost"), declared=0xFFFFFFF0)],
        # an iXML too large to read (over MAX_CHUNK_BYTES)
        "big_ixml": [chunk(b"iXML", b"<BWFXML>" + b"x" * (1 << 21) + b"</BWFXML>"), good],
        # binary junk where iXML should be, then a good bext
        "junk_ixml": [chunk(b"iXML", bytes(range(256)) * 3), good],
        # an entity-expansion bomb
        "bomb": [
            chunk(
                b"iXML",
                b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa">'
                b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]><BWFXML><NOTE>&b;</NOTE>'
                b"</BWFXML>",
            ),
            good,
        ],
        # a bext shorter than its fixed fields
        "short_bext": [chunk(b"bext", b"tiny"), chunk(b"LIST", info_chunk({"INAM": "kept"}))],
        # an INFO subchunk declaring more than its LIST holds: the ones before it stay
        "cut_info": [
            chunk(
                b"LIST",
                b"INFO" + chunk(b"INAM", b"kept\x00") + b"ICMT" + struct.pack("<I", 999) + b"short",
            )
        ],
        # odd sizes, padded: the chunk after an odd one is still found
        "odd": [chunk(b"junk", b"abc"), chunk(b"LIST", info_chunk({"INAM": "kep"})), good],
        # a bad ID3 chunk
        "bad_id3": [chunk(b"id3 ", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f" + b"\xff" * 40), good],
    }
    for name, before in cases.items():
        path = write_wav_chunks(tmp_path / f"{name}.wav", before)
        m = read_metadata(path).as_dict()
        values = {m.get("description"), m.get("title")}
        assert "lost" not in values, name
        if name not in ("huge",):
            assert values & {"kept", "kep"}, (name, m)
    # a file cut in the middle of its bext chunk, and one that is only a RIFF header
    data = write_bwf(tmp_path / "full.wav", "a description").read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:100])
    (tmp_path / "head.wav").write_bytes(data[:12])
    assert read_metadata(tmp_path / "cut.wav").as_dict() == {}
    assert read_metadata(tmp_path / "head.wav").as_dict() == {}
    assert read_metadata(tmp_path / "missing.wav").as_dict() == {}


def test_random_damage_never_raises(tmp_path):
    base = bytearray(write_bwf(
        tmp_path / "base.wav", "desc", "orig", ixml=ixml_chunk({"NOTE": "n"}, {"FXNAME": "f"}),
        info={"INAM": "t", "IKEY": "a;b"}, seconds=0.05,
    ).read_bytes())  # fmt: skip
    rng = np.random.default_rng(0)
    for i in range(150):
        data = bytearray(base)
        for at in rng.integers(12, len(data), size=int(rng.integers(1, 8))):
            data[at] = int(rng.integers(0, 256))
        cut = len(data) if i % 3 else int(rng.integers(12, len(data)))
        path = tmp_path / "damaged.wav"
        path.write_bytes(bytes(data[:cut]))
        meta = read_metadata(path).as_dict()  # never raises
        assert all(len(v) <= MAX_VALUE_CHARS for v in meta.get("raw", {}).values())


def test_values_are_cleaned_and_bounded():
    assert clean(b"a\x00junk after nul") == "a"
    assert clean("  two   spaces\x07bell ") == "two spaces bell"
    assert len(clean("x" * 10_000)) == MAX_VALUE_CHARS


# --- the catalogue, search, CLI and API ------------------------------------------------------


@pytest.fixture(scope="module")
def model_dir(tiny_text_dir, tmp_path_factory):
    from earshot.model.io import save_model
    from earshot.testing.models import tiny_model

    folder = tmp_path_factory.mktemp("meta-model") / "model"
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), folder)
    return folder


@pytest.fixture(scope="module")
def text_model(model_dir):
    from earshot.model.io import load_model

    return load_model(model_dir)


@pytest.fixture
def described(tmp_path):
    """A folder where one file says what it is only in its bext chunk, one only in its UCS
    name, and the rest say nothing."""
    root = tmp_path / "lib"
    root.mkdir()
    write_tone(root / "take_001.wav", 2.0, 16000, freq=300.0)
    add_bext(root / "take_001.wav", "Heavy wooden door slams shut in a stone hallway", "JD")
    write_tone(root / "GLASSmash_Bottle Break_AB_Kitchen.wav", 1.5, 16000, freq=900.0, seed=1)
    write_noise(root / "take_002.wav", 2.0, 16000, seed=2)
    write_tone(root / "take_003.flac", 2.0, 16000, freq=2000.0, seed=3)
    return root


def index(cat, model, *paths):
    return Indexer(cat, model, workers=0, progress=False).run([str(p) for p in paths])


def test_metadata_is_stored_searched_filtered_and_carried_by_hits(tmp_path, described, text_model):
    with Catalogue(tmp_path / "c.sqlite") as cat:
        summary = index(cat, text_model, described)
        assert summary.added == 4 and cat.check() == []
        door = cat.file_id_for_path(str(described / "take_001.wav"))
        glass = cat.file_id_for_path(str(described / "GLASSmash_Bottle Break_AB_Kitchen.wav"))
        info = cat.file(door)
        assert info["meta"]["description"].startswith("Heavy wooden door")
        assert info["meta"]["raw"]["bext:Originator"] == "JD"
        assert cat.file(cat.file_id_for_path(str(described / "take_002.wav")))["meta"] == {}
        # keyword search: the description's words, and the UCS name's
        assert [f for f, _ in cat.keyword_search("door slams")] == [door]
        assert [f for f, _ in cat.keyword_search("bottle")] == [glass]
        assert [f for f, _ in cat.keyword_search("GLASS")] == [glass]
        # the keyword filter: every phrase, in order; limited to columns when asked
        assert cat.file_ids_matching_keywords(["wooden door"]).tolist() == [door]
        assert cat.file_ids_matching_keywords(["door wooden"]).tolist() == []
        assert cat.file_ids_matching_keywords(["stone hall"]).tolist() == [door]  # prefix
        assert cat.file_ids_matching_keywords(["door", "hallway"]).tolist() == [door]
        assert cat.file_ids_matching_keywords(["door", "bottle"]).tolist() == []
        assert cat.file_ids_matching_keywords(["take"], columns=["meta"]).tolist() == []
        assert len(cat.file_ids_matching_keywords(["take"], columns=["name"])) == 3
        assert len(cat.file_ids_matching_keywords(['"', "  "])) == 4  # no words: no filter

        searcher = Searcher(cat, text_model)
        # hybrid: the description alone brings the file to the top
        hits = searcher.search_text("a door slams", k=4, hybrid=True)
        assert hits[0].file_id == door
        assert hits[0].meta["description"].startswith("Heavy wooden door")
        assert "raw" not in hits[0].meta  # hits carry the normalised fields only
        as_json = hits[0].as_dict()["meta"]
        assert as_json["originator"] == "JD" and as_json["sources"] == ["bext"]
        # hybrid is the default where files carry descriptions
        assert cat.has_described_files()
        by_default = searcher.search_text("a door slams", k=4)
        assert [h.file_id for h in by_default] == [h.file_id for h in hits]
        plain = {h.file_id: h for h in searcher.search_text("a door slams", k=4, hybrid=False)}
        assert (
            plain[door].meta == hits[0].meta and plain[glass].meta["ucs"]["source_id"] == "Kitchen"
        )
        assert all(h.as_dict()["meta"] is None for h in hits if h.file_id not in (door, glass))
        # Filters.keywords: only the files whose text holds the phrase
        only = searcher.search_text("anything", k=4, filters=Filters(keywords=("bottle break",)))
        assert [h.file_id for h in only] == [glass]
        assert searcher.search_text("x", k=4, filters=Filters(keywords="no such words")) == []


def test_hybrid_is_the_default_where_a_query_word_picks_files_out_by_name(tmp_path, text_model):
    """No embedded descriptions: hybrid only for a query whose words some file names hold,
    not for one only tags could match, nor for a word in most names."""
    root = tmp_path / "named"
    root.mkdir()
    write_tone(root / "door_slam_01.wav", 1.0, 16000, freq=300.0)
    write_tone(root / "rain_on_tin_roof.wav", 1.0, 16000, freq=500.0)
    write_tone(root / "footstep_gravel_02.wav", 1.0, 16000, freq=700.0)
    for i in range(4):
        write_noise(root / f"take_00{i}.wav", 1.0, 16000, seed=i)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, text_model, root)
        assert not cat.has_described_files()
        # "slams" finds "slam" (keyword_text.stem)
        assert cat.path_word_counts("a door slams") == {"door": 1, "slams": 1}
        assert cat.path_word_counts("the birds") == {"birds": 0}
        assert cat.path_word_counts("take") == {"take": 4}
        assert cat.path_word_counts("take", cap=2) == {"take": 2}  # counting stops there
        assert cat.ok_file_count() == 7
        searcher = Searcher(cat, text_model)
        assert searcher.hybrid_by_default("a door slams")
        assert searcher.hybrid_by_default("rain on a roof")
        assert not searcher.hybrid_by_default("birds singing")  # in no name
        assert not searcher.hybrid_by_default("take")  # in 4 names of 7: picks nothing out
        assert not searcher.hybrid_by_default(None)

        def ids(query, **kw):
            return [h.file_id for h in searcher.search_text(query, k=5, **kw)]

        door = cat.file_id_for_path(str(root / "door_slam_01.wav"))
        assert ids("a door slams") == ids("a door slams", hybrid=True)
        assert ids("a door slams")[0] == door
        assert ids("birds singing") == ids("birds singing", hybrid=False)
        # every word of the query in its name ("footsteps" → "footstep"): a good match,
        # whatever the tiny model makes of its sound
        steps = cat.file_id_for_path(str(root / "footstep_gravel_02.wav"))
        hits = searcher.search_text("footsteps on gravel", k=7)
        assert hits[0].file_id == steps and hits[0].band == "good" and hits[0].by_name
        assert not any(h.by_name for h in hits[1:])  # no other name holds every word
        # the query syntax's own words are not the description's
        assert not searcher.hybrid_by_default(searcher.plan_text("birds -door", None).text)
        # A library filed by folder (Doors/take_001.wav): its folders' words pick files out too;
        # the words of the folder all of it sits in (tmp_path's) pick nothing out.
        (root / "Birds" / "Dawn chorus").mkdir(parents=True)
        for i in range(2):
            write_tone(
                root / "Birds" / "Dawn chorus" / f"take_10{i}.wav", 1.0, 16000, freq=900.0 + 200 * i
            )
        index(cat, text_model, root)
        assert cat.path_word_counts("birds singing at dawn") == {
            "birds": 2, "singing": 0, "dawn": 2
        }  # fmt: skip
        assert searcher.hybrid_by_default("birds singing")
        birds = {
            cat.file_id_for_path(str(root / "Birds/Dawn chorus" / f"take_10{i}.wav"))
            for i in (0, 1)
        }
        found = ids("birds singing")
        assert found[0] in birds and birds <= set(found), found  # found where they are filed
        assert not searcher.hybrid_by_default("named")  # root's own name: every file has it


def test_a_file_described_by_every_word_is_a_good_match_and_not_trimmed(
    tmp_path, described, text_model
):
    from earshot.hits import trim_weak

    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, text_model, described)
        door = cat.file_id_for_path(str(described / "take_001.wav"))
        searcher = Searcher(cat, text_model)
        audio_only = {h.file_id: h for h in searcher.search_text("a door slams", 4, hybrid=False)}
        assert audio_only[door].band != "good"  # the tiny model knows nothing of doors
        assert not any(h.by_name for h in audio_only.values())
        hits = searcher.search_text("a door slams", k=4, hybrid=True)
        assert hits[0].file_id == door and hits[0].band == "good" and hits[0].by_name
        assert hits[0].as_dict()["by_name"] is True
        assert hits[0].confidence >= searcher.calibrations["text"].good
        assert door in [h.file_id for h in trim_weak(hits)]
        # one word of the query missing from its text: its sound score decides, as before
        partly = {h.file_id: h for h in searcher.search_text("door creaks", k=4, hybrid=True)}
        assert partly[door].band == searcher.calibrations["text"].band(partly[door].confidence)
        assert not partly[door].by_name


def test_cli_json_text_and_api_show_the_metadata(
    tmp_path, described, text_model, model_dir, capsys
):
    from fastapi.testclient import TestClient

    from earshot.cli import main
    from earshot.serve.app import Settings, create_app

    db = tmp_path / "c.sqlite"
    args = ["--db", str(db), "--model", str(model_dir)]
    assert main(["index", str(described), "--json", *args]) == 0
    capsys.readouterr()
    search = ["search", "door slams", "-k", "4", "--json", "--all", *args]  # weak ones too
    assert main([*search, "--hybrid"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert main(search) == 0  # on by default here
    assert json.loads(capsys.readouterr().out)["hits"] == hits
    assert main([*search, "--no-hybrid"]) == 0
    alone = json.loads(capsys.readouterr().out)["hits"]
    assert {h["name"] for h in alone} == {h["name"] for h in hits}  # all 4 files either way
    # Its description holds every word asked for: the one good match, the weak tail left out
    assert main(search[: -len(args) - 1] + args) == 0
    assert [h["name"] for h in json.loads(capsys.readouterr().out)["hits"]] == ["take_001.wav"]
    assert hits[0]["name"] == "take_001.wav"
    assert hits[0]["meta"]["description"] == "Heavy wooden door slams shut in a stone hallway"
    assert main(["search", "door slams", "-k", "4", "--hybrid", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith(f"[seg:{hits[0]['segment_id']}]")
    assert lines[1].strip() == '"Heavy wooden door slams shut in a stone hallway"'
    assert hits[0]["by_name"]  # what made it good, said under the description
    assert lines[2].strip() == "good by its name or description, not by its sound"
    with Catalogue(db, readonly=True) as cat:
        app = create_app(cat, text_model, Settings(allowed_hosts=None))
        with TestClient(app) as client:
            api = client.get("/api/search", params={"q": "door slams", "k": 4, "hybrid": True})
            assert api.json()["hits"] == hits
            default = client.get("/api/search", params={"q": "door slams", "k": 4})
            assert default.json()["hits"] == hits
            info = client.get(f"/api/files/{hits[0]['file_id']}").json()
    assert info["meta"]["raw"]["bext:Description"] == hits[0]["meta"]["description"]


# --- upgrading a schema-3 catalogue ----------------------------------------------------------


def downgrade_to_v3(path) -> None:
    """Make a catalogue exactly what schema 3 was: no `files.meta`, a 3-column FTS table."""
    with sqlite3.connect(path, isolation_level=None) as db:
        db.execute("BEGIN")
        db.execute("DROP TRIGGER files_fts_delete")
        db.execute("CREATE VIRTUAL TABLE f3 USING fts5 (name, folder, tags, "
                   "tokenize = 'unicode61 remove_diacritics 2')")  # fmt: skip
        db.execute("INSERT INTO f3 (rowid, name, folder, tags) "
                   "SELECT rowid, name, folder, tags FROM files_fts")  # fmt: skip
        db.execute("DROP TABLE files_fts")
        db.execute("ALTER TABLE f3 RENAME TO files_fts")
        db.execute("CREATE TRIGGER files_fts_delete AFTER DELETE ON files BEGIN "
                   "DELETE FROM files_fts WHERE rowid = old.id; END")  # fmt: skip
        db.execute("ALTER TABLE files DROP COLUMN meta")
        db.execute("UPDATE meta SET value = 3 WHERE key = 'schema_version'")
        db.execute("COMMIT")


def test_a_v3_catalogue_upgrades_and_reads_metadata_without_re_embedding(
    tmp_path, described, text_model
):
    path = tmp_path / "old.sqlite"
    with Catalogue(path) as cat:
        index(cat, text_model, described)
        before = {r[0]: r[1:] for r in cat.db.execute("SELECT id, file_id, vector FROM segments")}
    downgrade_to_v3(path)

    with Catalogue(path, readonly=True) as ro:  # read as it is: no metadata, search works
        assert ro.stats()["schema_version"] == 3 and ro.check() == []
        assert ro.files_without_meta() == {} and ro.file(1)["meta"] is None
        assert ro.keyword_search("door") == []
        assert len(ro.keyword_search("take")) == 3
        assert ro.file_ids_matching_keywords(["take"]).size == 3
        assert ro.file_ids_matching_keywords(["take"], columns=["meta"]).size == 0
        hits = Searcher(ro, text_model).search_text("a door", k=4, hybrid=True)
        assert len(hits) == 4 and all(h.meta is None for h in hits)
        # no descriptions (none read yet): hybrid is off by default
        assert not ro.has_described_files()
        plain = Searcher(ro, text_model).search_text("a door", k=4, hybrid=False)
        default = Searcher(ro, text_model).search_text("a door", k=4)
        assert [(h.file_id, h.score) for h in default] == [(h.file_id, h.score) for h in plain]

    with Catalogue(path) as cat:  # writable: upgraded, every file's metadata unread
        assert cat.stats()["schema_version"] == 5 and cat.check() == []
        assert len(cat.files_without_meta()) == 4
        generation = cat.generation

        class NoEmbedding:  # indexing now must not embed anything
            def __getattr__(self, name):
                return getattr(text_model, name)

            def encode_audio(self, *a, **k):
                raise AssertionError("an unchanged file was embedded again")

            encode_audio_tagged = encode_audio

        summary = index(cat, NoEmbedding(), described)
        assert (summary.added, summary.updated, summary.unchanged) == (0, 0, 4)
        assert summary.metadata_read == 4 and summary.segments == 0
        assert cat.files_without_meta() == {} and cat.check() == []
        assert cat.generation == generation + 1
        after = {r[0]: r[1:] for r in cat.db.execute("SELECT id, file_id, vector FROM segments")}
        assert after == before  # same segment ids, same vectors
        door = cat.file_id_for_path(str(described / "take_001.wav"))
        assert [f for f, _ in cat.keyword_search("door slams")] == [door]
        assert index(cat, NoEmbedding(), described).metadata_read == 0  # once only


def test_cli_index_says_it_read_the_metadata_of_an_upgraded_catalogue(
    tmp_path, described, text_model, model_dir, capsys
):
    from earshot.cli import main

    db = tmp_path / "old.sqlite"
    with Catalogue(db) as cat:
        index(cat, text_model, described)
    downgrade_to_v3(db)
    assert main(["index", str(described), "--db", str(db), "--model", str(model_dir)]) == 0
    out = capsys.readouterr().out
    assert "0 added, 0 updated, 0 removed, 4 unchanged" in out
    assert "read the embedded metadata of 4 unchanged files" in out
    assert main(["index", str(described), "--db", str(db), "--model", str(model_dir)]) == 0
    assert "embedded metadata" not in capsys.readouterr().out


def test_a_touched_file_keeps_its_segments_and_gets_its_metadata_again(tmp_path, text_model):
    import os

    root = tmp_path / "lib"
    root.mkdir()
    path = write_bwf(root / "a.wav", "first words", seconds=1.0)
    with Catalogue(tmp_path / "c.sqlite") as cat:
        index(cat, text_model, root)
        fid = cat.file_id_for_path(str(path))
        st = os.stat(path)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, same bytes
        index(cat, text_model, root)
        assert cat.file_id_for_path(str(path)) == fid and cat.check() == []
        assert [f for f, _ in cat.keyword_search("first words")] == [fid]


@pytest.mark.slow
def test_bench_hybrid_quick_reports_every_fraction():
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "bench" / "bench_hybrid.py"), "--quick"],
        cwd=root,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    assert result["quick"] is True and result["clips"] == 12 and result["metadata_read"] == 12
    assert set(result["fractions"]) == {"0.0", "0.25", "0.5", "1.0", "names_kept_no_metadata"}
    none, every = result["fractions"]["0.0"], result["fractions"]["1.0"]
    assert none["hybrid"] == none["vector"]  # nothing described: fusion changes nothing
    assert every["hybrid"]["mAP@10"] == 1.0  # every file described by its label


def test_the_cli_hit_line_shows_the_description_else_the_title():
    from earshot.commands.search import meta_line

    assert meta_line({"description": "a  door\nslams", "title": "Door"}) == '"a door slams"'
    assert meta_line({"title": "Goldfinch singing", "comment": "c"}) == '"Goldfinch singing"'
    assert meta_line({"ucs": {"cat_id": "DOORWood"}, "fx_name": "Creak"}) == '"Creak"'
    assert meta_line({"keywords": ["x"], "sources": ["vorbis"]}) == ""
    assert meta_line({"description": "x" * 300}, width=20) == '"' + "x" * 19 + '…"'
