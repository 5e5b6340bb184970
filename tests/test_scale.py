"""earshot on Ray (issue #17): shards, search over shards, a real two-node Ray cluster and a
real S3 API (moto's server) on loopback.

The fast tests run the shard writer and the shard indexes in this process (no cluster): the
format, which rows count, the vectors (embed_file's, float16), the hits and tags against the
catalogue's, merging into a catalogue. The slow ones start a token-authenticated two-node
cluster (`ray start --head` + `ray start --address`, one CPU and an 80 MB object store each)
and `moto_server`, index recordings from a bucket with `earshot index --ray --shards`, search
the shards, kill a worker mid-run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="earshot[ray] is not installed (pyarrow)")

from earshot.cli import main  # noqa: E402
from earshot.index.build import Indexer  # noqa: E402
from earshot.index.store import Catalogue  # noqa: E402
from earshot.model.io import load_model, save_model  # noqa: E402
from earshot.scale import shards as sh  # noqa: E402
from earshot.scale.storage import Location  # noqa: E402
from earshot.search import Searcher  # noqa: E402
from earshot.testing.audio import tone, write_noise, write_tone  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
QUERIES = ("a high tone", "noise", "a low hum", "birdsong")


def write_library(root: Path) -> list[Path]:
    """Seven recordings (WAV, FLAC, Ogg; 1.5-12 s; one that changes halfway) and a corrupt one."""
    import soundfile as sf

    (root / "birds").mkdir(parents=True)
    (root / "street").mkdir()
    paths = [
        write_tone(root / "birds" / "robin.wav", 3.0, 22050, freq=3000.0),
        write_tone(root / "birds" / "owl.flac", 2.0, 44100, channels=2, freq=400.0, seed=1),
        write_tone(root / "birds" / "wren.wav", 6.0, 22050, freq=2500.0, seed=5),
        write_noise(root / "street" / "traffic.ogg", 4.0, 32000, seed=2),
        write_noise(root / "street" / "hiss.flac", 1.5, 16000, seed=3, level=0.05),
        write_tone(root / "street" / "hum.wav", 5.0, 16000, freq=120.0, seed=6),
    ]
    x = tone(12.0, 16000, freq=900.0, seed=4)[:, 0]
    half = len(x) // 2
    x[half:] = np.clip(0.3 * np.random.default_rng(4).standard_normal(len(x) - half), -1, 1)
    sf.write(root / "street" / "market.wav", x, 16000, subtype="PCM_16")
    paths.append(root / "street" / "market.wav")
    (root / "street" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEnot really")
    return paths


# --- the format, without Ray ---------------------------------------------------------------


def _shard_file(i: int, uri: str, version: str = "10:1") -> sh.ShardFile:
    return sh.ShardFile(i, uri, version, "h", 2.0, 16000, 1, "WAV", "PCM_16", {"title": "t"})


def test_a_shard_round_trips_and_its_name_is_its_plan(tmp_path):
    loc = Location(tmp_path / "s")
    rng = np.random.default_rng(0)
    v = rng.standard_normal((3, 24)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    files = [_shard_file(5, "/a.wav"), _shard_file(6, "/b.wav")]
    windows = [(5, 0, 0.0, 1.0, v[0], b"\x01\x02\xff"), (5, 1, 0.5, 1.5, v[1], None)]
    windows.append((6, 0, 0.0, 2.0, v[2], b""))
    name = sh.shard_name([(5, "/a.wav", "10:1"), (6, "/b.wav", "10:1")])
    assert name == sh.shard_name([(5, "/a.wav", "10:1"), (6, "/b.wav", "10:1")])
    assert name != sh.shard_name([(5, "/a.wav", "10:2"), (6, "/b.wav", "10:1")])
    assert name.startswith("shard-0000000005-") and name.endswith(".parquet")
    loc.write_bytes(name, sh.encode_shard("m1", 24, files, windows))
    assert loc.names("shard-") == [name]
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "s").iterdir())
    shard = sh.read_shard(loc, name)
    assert shard.model_id == "m1" and [f.uri for f in shard.files] == ["/a.wav", "/b.wav"]
    assert shard.files[0].meta == {"title": "t"} and shard.files[0].format == "WAV"
    np.testing.assert_array_equal(shard.vectors, v.astype("<f2"))
    assert shard.tags == [b"\x01\x02\xff", None, b""]
    assert shard.segment_ids.tolist() == [5 << 20, (5 << 20) | 1, 6 << 20]
    assert sh.read_shard_files(loc, name)[1][1].uri == "/b.wav"
    (tmp_path / "s" / "shard-x.parquet").write_bytes(b"PAR1 not one")
    with pytest.raises(sh.ShardError):
        sh.read_shard(loc, "shard-x.parquet")


def test_the_newest_id_of_a_path_counts_and_tombstones_remove(tmp_path):
    loc = Location(tmp_path)
    v = np.eye(1, 8, dtype=np.float32)[0]
    old = [_shard_file(1, "/a.wav"), _shard_file(2, "/b.wav"), _shard_file(3, "/c.wav")]
    new = [_shard_file(4, "/a.wav", "11:2")]
    for name, files in (("shard-1.parquet", old), ("shard-2.parquet", new)):
        rows = [(f.id, 0, 0.0, 1.0, v, None) for f in files]
        loc.write_bytes(name, sh.encode_shard("m", 8, files, rows))
    manifest = sh.Manifest("m", 8, {}, [], 5, {"shard-1.parquet": {}, "shard-2.parquet": {}})
    manifest.removed = {"/c.wav": 3}
    latest, dead = sh.current_files(loc, manifest)
    assert {u: (f.id, s) for u, (f, s) in latest.items()} == {
        "/a.wav": (4, "shard-2.parquet"),
        "/b.wav": (2, "shard-1.parquet"),
    }
    assert dead == {1, 3}
    sh.save_manifest(loc, manifest)
    assert sh.load_manifest(loc).removed == {"/c.wav": 3}
    (tmp_path / sh.MANIFEST).write_text('{"format": "something else"}')
    with pytest.raises(sh.ShardError, match="not an earshot shard manifest"):
        sh.load_manifest(loc)


# --- the writer and the indexes in this process, a tagging model ---------------------------


@pytest.fixture(scope="module")
def tagged(tmp_path_factory, tiny_text_dir):
    """A tagging model (tests/test_tags.py's: a tiny CNN whose tags are computed from the
    sound), a library, its catalogue (earshot index, batch 1) and its shards (the shard
    writer, batch 1), in two shards."""
    from earshot.testing.models import tiny_model
    from earshot.testing.scale import catalogue_and_shards
    from test_tags import tagged as tagging

    base = tmp_path_factory.mktemp("scale-tagged")
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), base / "model")
    model = tagging(load_model(base / "model"))
    paths = write_library(base / "lib")
    db, loc = catalogue_and_shards(base, model, base / "lib", cuts=(5,))
    return base, model, paths, db, loc


def _shard_vectors(loc: Location) -> dict[str, list]:
    """uri -> [(start, end, float16 vector, tag blob)] over every shard."""
    out: dict[str, list] = {}
    for name in sh.load_manifest(loc).shards:
        shard = sh.read_shard(loc, name)
        uris = {f.id: f.uri for f in shard.files}
        for i, fid in enumerate(shard.file_id):
            row = (shard.start_s[i], shard.end_s[i], shard.vectors[i], shard.tags[i])
            out.setdefault(uris[int(fid)], []).append(row)
    return out


@pytest.mark.slow
def test_shard_vectors_are_embed_files_and_the_catalogues(tagged):
    from earshot.embed import embed_file

    _base, model, paths, db, loc = tagged
    got = _shard_vectors(loc)
    assert sorted(got) == sorted(str(p) for p in paths)  # the broken file has no windows
    worst = 0.0
    with Catalogue(db, readonly=True) as cat:
        for path in paths:
            ref = embed_file(model, path, batch_size=1)
            rows = got[str(path)]
            assert [(r[0], r[1]) for r in rows] == [(w.start_s, w.end_s) for w in ref]
            shard = np.stack([r[2] for r in rows]).astype(np.float32)
            fp32 = np.stack([w.vector for w in ref])
            # float16 storage: the same rounding of the same vectors as the catalogue's
            np.testing.assert_array_equal(shard, fp32.astype("<f2").astype(np.float32))
            worst = max(worst, float(np.abs(shard - fp32).max()))
            segs = cat.file_segments(cat.file_id_for_path(str(path)))
            stored = np.stack([cat.segment_vector(s.segment_id) for s in segs])
            np.testing.assert_array_equal(shard, stored.astype(np.float32))
            tags = cat.segment_tags([s.segment_id for s in segs])
            names = model.tag_names
            from earshot.index.tag_blobs import decode_tags

            for r, s in zip(rows, segs, strict=True):
                e = decode_tags(r[3])
                mine = [(names[t], q / 255) for t, q in zip(e["tag"], e["q"], strict=True)]
                assert mine == tags.get(s.segment_id, [])
    assert any(r[3] for rows in got.values() for r in rows)  # tags were compared, not nothing
    assert worst <= 5e-4  # float16's rounding of unit vectors, nothing more


def _hit_view(hits, root: str = "") -> list[tuple]:
    return [
        (h.path.removeprefix(root), h.start_s, h.end_s, round(h.score, 6), h.tags, h.format)
        for h in hits
    ]


@pytest.mark.slow
def test_shard_search_gives_the_catalogues_hits(tagged):
    from earshot.scale.search import ShardSearcher

    _base, model, _paths, db, loc = tagged
    with Catalogue(db, readonly=True) as cat:
        searcher = Searcher(cat, model)
        for actors in (1, 2):  # one index, or the shards split over two
            shards = ShardSearcher(str(loc.uri), model, address=None, actors=actors)
            assert shards.total == sum(len(v) for v in _shard_vectors(loc).values())
            for q in QUERIES:
                for k in (1, 3, 10):
                    want = _hit_view(searcher.search_text(q, k))
                    assert _hit_view(shards.search_text(q, k)) == want
                    assert want
            folders = [x.folder for x in shards.indexes]
            shards.close()
            assert not any(os.path.exists(f) for f in folders)  # their catalogues removed
            assert any(h.tags for h in searcher.search_text("noise", 10))


@pytest.mark.slow
def test_merge_shards_makes_the_same_catalogue(tagged, tmp_path):
    _base, model, _paths, db, loc = tagged
    merged = tmp_path / "merged.sqlite"
    assert main(["merge-shards", loc.uri, "--db", str(merged), "--json"]) == 0
    with Catalogue(db, readonly=True) as a, Catalogue(merged, readonly=True) as b:
        assert b.model_id == a.model_id and b.tag_names == a.tag_names
        assert b.check() == []
        sa, sb = a.stats(), b.stats()
        for key in ("files_ok", "files_skipped", "segments"):
            assert sa[key] == sb[key], key
        for q in QUERIES:
            want = _hit_view(Searcher(a, model).search_text(q, 5))
            assert _hit_view(Searcher(b, model).search_text(q, 5)) == want
        assert "broken.wav" in str(b.skipped())


@pytest.mark.slow
def test_the_shard_server_answers_the_catalogues_hits(tagged):
    from fastapi.testclient import TestClient

    from earshot.scale.search import ShardSearcher
    from earshot.scale.serve import create_shard_app
    from earshot.serve.app import Settings
    from earshot.serve.guard import LOOPBACK_NAMES

    _base, model, _paths, db, loc = tagged
    searcher = ShardSearcher(loc.uri, model, address=None, actors=2)
    app = create_shard_app(searcher, Settings(token="s3cret", allowed_hosts=LOOPBACK_NAMES))
    client = TestClient(app, base_url="http://127.0.0.1")
    assert client.get("/api/search", params={"q": "noise"}).status_code == 401
    auth = {"Authorization": "Bearer s3cret"}
    got = client.get("/api/search", params={"q": "noise", "k": 3}, headers=auth).json()
    with Catalogue(db, readonly=True) as cat:
        want = [h.as_dict() for h in Searcher(cat, model).search_text("noise", 3)]
    # The "same hits": file, span, score, tags (and what the file is); the rest is
    # compared in tests/test_scale_search.py.
    same = ("path", "start", "end", "score", "tags", "duration", "format", "sample_rate")
    assert [[h[k] for k in same] for h in got["hits"]] == [[h[k] for k in same] for h in want]
    stats = client.get("/api/stats", headers=auth).json()["catalogue"]
    assert stats["segments"] == searcher.total and stats["actors"] == 2
    bad = client.get("/api/search", params={"q": " "}, headers=auth)
    assert bad.status_code == 400 and "empty query" in bad.json()["error"]
    app.state.service.close()


_RAY_PRINTS = """
import atexit, json, threading
from earshot.scale.cluster import keep_stdout_for_the_answer

ray = {"__name__": "ray._private.worker"}  # code that runs as Ray's own module
exec("def report(line):\\n    print(line)", ray)
keep_stdout_for_the_answer()
keep_stdout_for_the_answer()
atexit.register(ray["report"], "(raylet) Task failed; it will be retried")  # a held-back line
t = threading.Thread(target=ray["report"], args=("(raylet) A worker died or was killed",))
t.start()
t.join()
exec("def safe_print(*args, **kwargs):\\n    print(*args, **kwargs)", ray)
ray["safe_print"](json.dumps({"hits": []}))  # the answer, through Ray's patched print
"""


def test_once_joined_what_ray_prints_goes_to_stderr():
    """Ray's driver prints the cluster's messages to stdout, from its threads and, at exit,
    what it held back; `connect` routes them to stderr so a --json answer stays one document,
    while what the program prints stays on stdout."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run([sys.executable, "-c", _RAY_PRINTS], env=env, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert json.loads(done.stdout) == {"hits": []}
    err = done.stderr.decode()
    assert "A worker died" in err and "Task failed" in err


def test_free_port_never_hands_out_a_port_twice(monkeypatch):
    """The OS may give a just-released port straight back; Ray then refuses to start when two
    of its components got the same one (CI saw it). free_port remembers what it gave."""
    import earshot.testing.scale as scale

    offered = iter([41001, 41001, 41002, 41001, 41003])

    class OneShotSocket:
        def __init__(self, *a):
            self.port = next(offered)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, addr):
            pass

        def getsockname(self):
            return (scale.LOOPBACK, self.port)

    monkeypatch.setattr(scale, "_GIVEN", set())
    monkeypatch.setattr(scale.socket, "socket", OneShotSocket)
    assert [scale.free_port() for _ in range(3)] == [41001, 41002, 41003]


def test_shard_commands_say_what_is_wrong(tmp_path, capsys):
    missing = str(tmp_path / "none")
    assert main(["search", "--shards", missing, "tone"]) == 1
    assert "earshot: error: no shards at" in capsys.readouterr().err
    assert main(["index", str(tmp_path), "--ray", "auto"]) == 1
    assert "earshot: error: --ray writes shards" in capsys.readouterr().err
    assert main(["merge-shards", missing, "--db", str(tmp_path / "x.sqlite")]) == 1
    assert "earshot: error: no shards at" in capsys.readouterr().err
    assert main(["search", "--shards", missing, "tone", "--db", str(tmp_path / "x.db")]) == 1
    assert "leave out --db" in capsys.readouterr().err
    assert main(["search", "--shards", str(tmp_path), "tone", "--actors", "0"]) == 1
    assert "--actors 0: give 1 or more" in capsys.readouterr().err
    assert main(["search", "--shards", "s3://", "tone"]) == 1
    assert "names no bucket" in capsys.readouterr().err


# --- a real cluster and a real S3 API ------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, tiny_text_dir):
    """Two Ray nodes (token auth, 1 CPU each), moto's S3 with the library in s3://rec/lib,
    a tiny model; this process joined to the cluster. Everything stopped afterwards."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        pytest.skip("earshot[ray] is not installed (ray)")
    if importlib.util.find_spec("moto") is None:
        pytest.skip("moto[server] is not installed (the dev extra)")
    from earshot.testing.models import tiny_model
    from earshot.testing.scale import MotoS3, RayCluster

    base = tmp_path_factory.mktemp("scale-cluster")
    save_model(tiny_model(text_model=str(tiny_text_dir), text_dim=16), base / "model")
    paths = write_library(base / "lib")
    saved = dict(os.environ)
    with MotoS3() as s3, RayCluster(nodes=2, cpus=1, object_store_mb=80) as rc:
        os.environ.update(s3.env)
        os.environ.update(rc.env)  # before ray is first imported: it reads its token once
        import ray

        client = s3.client()
        for bucket in ("rec", "out"):
            client.create_bucket(Bucket=bucket)
        for p in [*paths, base / "lib" / "street" / "broken.wav"]:
            client.upload_file(str(p), "rec", f"lib/{p.relative_to(base / 'lib')}")
        try:
            yield base, rc, s3, client, paths
        finally:
            if ray.is_initialized():
                ray.shutdown()
            os.environ.clear()
            os.environ.update(saved)


def _cli(base, *args) -> dict:
    return ["--model", str(base / "model"), "--json", *args]


@pytest.mark.slow
def test_index_from_a_bucket_on_two_nodes_matches_one_machine(cluster, capsys):
    from earshot.embed import embed_file

    base, rc, _s3, client, paths = cluster
    # fp32 as the single-machine reference below: `--precision auto` is bf16 on a CPU with
    # native bf16 (this tiny PANNs model has no fp32 fast path to keep it in fp32)
    argv = ["index", "s3://rec/lib", "--ray", rc.address, "--shards", "s3://out/first"]
    argv += ["--precision", "fp32"]
    assert main([*argv, "--files-per-shard", "3", "--batch-size", "1", *_cli(base)]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 7 and summary["shards_written"] == 3
    assert [s["path"] for s in summary["skipped"]] == ["s3://rec/lib/street/broken.wav"]
    assert len({a["node"] for a in summary["actors"]}) >= 1
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="out", Prefix="first/")["Contents"]}
    assert "first/manifest.json" in keys and sum(k.endswith(".parquet") for k in keys) == 3
    # The same vectors as the single-machine path, file by file.
    loc = Location("s3://out/first")
    got = _shard_vectors(loc)
    model = load_model(base / "model")
    for p in paths:
        rows = got[f"s3://rec/lib/{p.relative_to(base / 'lib')}"]
        ref = np.stack([w.vector for w in embed_file(model, p, batch_size=1)])
        shard = np.stack([r[2] for r in rows]).astype(np.float32)
        np.testing.assert_array_equal(shard, ref.astype("<f2").astype(np.float32))
    # Search over the shards, in actors on the cluster: the catalogue's hits.
    db = base / "local.sqlite"
    with Catalogue(db) as cat:
        Indexer(cat, model, workers=0, batch_size=1, progress=False).run([str(base / "lib")])
    for q in QUERIES[:2]:
        assert (
            main(["search", q, "-k", "4", "--all", "--shards", "s3://out/first", *_cli(base)]) == 0
        )
        hits = json.loads(capsys.readouterr().out)["hits"]
        with Catalogue(db, readonly=True) as cat:
            want = [
                h.as_dict() for h in Searcher(cat, load_model(base / "model")).search_text(q, 4)
            ]
        view = [(h["path"], h["start"], h["end"], h["score"], h["tags"]) for h in hits]
        local = str(base / "lib") + "/"
        assert view == [
            (
                "s3://rec/lib/" + h["path"].removeprefix(local),
                h["start"],
                h["end"],
                h["score"],
                h["tags"],
            )
            for h in want
        ]


def _without(doc: dict, local: str, remote: str) -> dict:
    """A search's JSON without ids, local paths written as the bucket's URIs."""
    for h in doc["hits"]:
        for key in ("file_id", "segment_id"):
            h.pop(key)
        for key in ("path", "folder"):
            h[key] = h[key].replace(local, remote)
        h["also_at"] = [p.replace(local, remote) for p in h["also_at"]]
    return doc


@pytest.mark.slow
def test_filtered_and_by_example_search_and_the_page_over_a_bucket(cluster, capsys):
    """Actors on both nodes, recordings and shards in moto's S3: filters, query syntax and
    search by example give the catalogue's answers; the page's file routes play a recording
    held in the bucket; an index actor killed mid-serve is restarted and answers again."""
    from fastapi.testclient import TestClient

    from earshot.scale.search import ShardSearcher
    from earshot.scale.serve import create_shard_app
    from earshot.serve.app import Settings

    base, rc, _s3, _client, _paths = cluster
    uri = "s3://out/filtered"
    argv = ["index", "s3://rec/lib", "--ray", rc.address, "--shards", uri, "--precision", "fp32"]
    assert main([*argv, "--files-per-shard", "2", "--batch-size", "1", *_cli(base)]) == 0
    capsys.readouterr()
    db = base / "filtered.sqlite"
    model = load_model(base / "model")
    with Catalogue(db) as cat:
        Indexer(cat, model, workers=0, batch_size=1, progress=False).run([str(base / "lib")])
    example = write_tone(base / "example.wav", 2.0, 22050, freq=2800.0, seed=12)
    local, remote = str(base / "lib"), "s3://rec/lib"
    for search in (
        ["tone", "-k", "4", "--folder", "birds", "--spans", "2"],
        ["noise", "--format", "flac", "--min-duration", "1"],
        ["tone ch:1 dur:<5 -hum", "-k", "3", "--all"],
        ["--like", str(example), "-k", "4", "--spans", "2", "--max-duration", "6"],
    ):
        over = ["--shards", uri, "--ray", rc.address, "--actors", "2"]
        assert main(["search", *search, *over, *_cli(base)]) == 0
        got = _without(json.loads(capsys.readouterr().out), local, remote)
        assert main(["search", *search, "--db", str(db), *_cli(base)]) == 0
        want = _without(json.loads(capsys.readouterr().out), local, remote)
        assert got == want and got["hits"], search
    searcher = ShardSearcher(uri, model, address=rc.address, actors=2)
    app = create_shard_app(searcher, Settings())
    try:
        assert len({a["pid"] for a in searcher.stats()}) == 2
        client = TestClient(app, base_url="http://127.0.0.1")
        hits = client.get("/api/search", params={"q": "tone", "k": 10}).json()["hits"]
        hit = next(h for h in hits if h["path"].endswith("wren.wav"))
        audio = client.get(f"/api/audio/{hit['file_id']}", headers={"Range": "bytes=44-1043"})
        assert audio.status_code == 206
        assert audio.content == (base / "lib" / "birds" / "wren.wav").read_bytes()[44:1044]
        peaks = client.get(f"/api/peaks/{hit['file_id']}", params={"n": 32})
        assert peaks.status_code == 200 and len(peaks.json()["peaks"]) == 32
        similar = client.get(f"/api/similar/{hit['file_id']}", params={"k": 3}).json()["hits"]
        assert similar and hit["path"] not in [h["path"] for h in similar]
        # An index actor killed with SIGKILL while serving: Ray restarts it (it loads its
        # shards again) and runs the read again there; the answer is the same.
        before = client.get("/api/search", params={"q": "noise", "k": 5}).json()["hits"]
        victim = searcher.stats()[0]["pid"]
        os.kill(victim, signal.SIGKILL)
        after = client.get("/api/search", params={"q": "noise", "k": 5})
        assert after.status_code == 200, after.text
        assert after.json()["hits"] == before
        assert victim not in {a["pid"] for a in searcher.stats()}
    finally:
        app.state.service.close()


@pytest.mark.slow
def test_a_rerun_skips_what_is_done_and_takes_changes(cluster, capsys):
    base, rc, _s3, client, paths = cluster
    argv = ["index", "s3://rec/lib", "--ray", rc.address, "--shards", "s3://out/rerun"]
    argv += ["--files-per-shard", "4", *_cli(base)]
    assert main(argv) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["added"] == 7 and first["shards"] == 2
    assert main(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["added"], again["unchanged"], again["shards_written"]) == (0, 8, 0)
    # One recording replaced, one deleted: one new shard; a shard left with nothing is deleted.
    write_noise(base / "new_robin.wav", 2.0, 22050, seed=11)
    client.upload_file(str(base / "new_robin.wav"), "rec", "lib/birds/robin.wav")
    client.delete_object(Bucket="rec", Key="lib/street/hum.wav")
    try:
        assert main(argv) == 0
        changed = json.loads(capsys.readouterr().out)
        assert (changed["updated"], changed["removed"], changed["shards_written"]) == (1, 1, 1)
        loc = Location("s3://out/rerun")
        latest, _dead = sh.current_files(loc, sh.load_manifest(loc))
        assert len(latest) == 7 and "s3://rec/lib/street/hum.wav" not in latest
        assert latest["s3://rec/lib/birds/robin.wav"][0].id > 8
        assert (
            main(
                ["search", "noise", "-k", "10", "--all", "--shards", "s3://out/rerun", *_cli(base)]
            )
            == 0
        )
        hits = json.loads(capsys.readouterr().out)["hits"]
        assert len(hits) == len({h["path"] for h in hits}) == 6  # 7 files, one skipped
        assert "s3://rec/lib/street/hum.wav" not in {h["path"] for h in hits}
    finally:
        client.upload_file(str(paths[0]), "rec", "lib/birds/robin.wav")
        client.upload_file(str(paths[5]), "rec", "lib/street/hum.wav")


def _manifest_while_written(loc):
    """The manifest as a poller sees it while a run rewrites it; None before the first, and
    None for a read that crossed a rewrite: moto's server can answer a GET during a PUT of the
    same key with bytes that are not the object (CI saw it here once: "not JSON"). S3 itself
    never serves part of a PUT.
    """
    try:
        return sh.load_manifest(loc) if loc.exists(sh.MANIFEST) else None
    except sh.ShardError:
        return None


def _only_json(out: bytes) -> dict:
    """The --json summary, the whole of stdout: what Ray's driver threads print (a worker
    died, a task retried) goes to stderr (`earshot.scale.cluster`)."""
    return json.loads(out)


def _actor_pids(rc) -> list[int]:
    """The embedding actors' processes: Ray titles them after the class; only processes of
    this test's own cluster (they carry its token in their environment) are looked at."""
    token = rc.env["RAY_AUTH_TOKEN"].encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            title = (entry / "cmdline").read_bytes()
            if b"ShardWriter" in title and token in (entry / "environ").read_bytes():
                found.append(int(entry.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_a_killed_worker_is_retried_and_nothing_is_lost_or_doubled(cluster, tmp_path):
    """kill -9 of the embedding actor's process mid-run: Ray restarts it and retries its
    shard; then the driver is killed mid-run and the run is done again. Every file is in
    exactly one current shard, each window once."""
    base, rc, _s3, _client, paths = cluster
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    uri = "s3://out/killed"
    cmd = [sys.executable, "-m", "earshot.cli", "index", "s3://rec/lib", "--ray", rc.address]
    cmd += ["--shards", uri, "--files-per-shard", "1", *_cli(base)]
    # Slow shards, so that a worker is caught holding one (passed on to the actors).
    env["EARSHOT_TEST_SHARD_DELAY_S"] = "1.0"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    loc = Location(uri)
    killed = None
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = _manifest_while_written(loc)
        if manifest is not None and len(manifest.shards) >= 1:
            pids = _actor_pids(rc)
            if pids:
                killed = pids[0]
                os.kill(killed, signal.SIGKILL)
                break
        time.sleep(0.5)
    out, err = proc.communicate(timeout=300)
    assert killed is not None, err.decode()[-2000:]
    assert proc.returncode == 0, err.decode()[-3000:]
    summary = _only_json(out)
    assert summary["added"] == 7 and summary["shards"] == 8
    with pytest.raises(ProcessLookupError):
        os.kill(killed, 0)

    # Now the driver: killed while shards are being written, then run again.
    uri2 = "s3://out/driver"
    cmd2 = [*cmd[: cmd.index("--shards") + 1], uri2, *cmd[cmd.index("--shards") + 2 :]]
    proc = subprocess.Popen(cmd2, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    loc2 = Location(uri2)
    while time.monotonic() < deadline and proc.poll() is None:
        manifest = _manifest_while_written(loc2)
        if manifest is not None and len(manifest.shards) >= 2:
            proc.kill()
            break
        time.sleep(0.3)
    proc.communicate(timeout=60)
    time.sleep(3)  # the dead driver's job is torn down by Ray
    env.pop("EARSHOT_TEST_SHARD_DELAY_S")
    done = subprocess.run(cmd2, env=env, capture_output=True, timeout=300)
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    again = _only_json(done.stdout)
    assert again["added"] + again["shards_adopted"] >= 1
    for location in (loc, loc2):
        manifest = sh.load_manifest(location)
        latest, dead = sh.current_files(location, manifest)
        assert len(latest) == 8  # 7 recordings and the broken one, each once
        counts: dict[str, int] = {}
        for name in manifest.shards:
            shard = sh.read_shard(location, name)
            for f in shard.files:
                if f.id not in dead:
                    counts[f.uri] = counts.get(f.uri, 0) + int((shard.file_id == f.id).sum())
        model = load_model(base / "model")
        from earshot.embed import embed_file

        for p in paths:
            uri_p = f"s3://rec/lib/{p.relative_to(base / 'lib')}"
            assert counts[uri_p] == len(embed_file(model, p)), uri_p
