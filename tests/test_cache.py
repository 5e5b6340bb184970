"""Feature cache (HDF5 log-mel windows) and text cache (SQLite sentence embeddings)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import earshot.data.cache as cache_mod
from earshot.audio.features import LogMel
from earshot.audio.windows import window_file
from earshot.config import AudioConfig
from earshot.data.cache import TextCache, build_feature_cache, feature_key
from earshot.data.datasets import CaptionDataset, Clip
from earshot.testing.audio import make_corrupt_files, write_tone

SR = 16000
# 1 s windows with a 0.5 s hop keep every file tiny; the frontend is PANNs' own otherwise.
SMALL = AudioConfig(window_s=1.0, hop_s=0.5)


def make_dataset(root: Path, seconds: list[float], split: str = "train") -> CaptionDataset:
    root.mkdir(parents=True, exist_ok=True)
    clips = []
    for i, s in enumerate(seconds):
        path = write_tone(root / f"c{i}.wav", s, SR, freq=200.0 + 150 * i, seed=i)
        clips.append(Clip(path.name, path, (f"tone {i}",)))
    return CaptionDataset("synthetic", split, tuple(clips))


def with_clip(dataset: CaptionDataset, index: int, path: Path) -> CaptionDataset:
    clips = list(dataset.clips)
    clips[index] = Clip(path.name, path, ("broken",))
    return CaptionDataset(dataset.name, dataset.split, tuple(clips))


def contents(store) -> dict[str, object]:
    """Everything a store holds, read straight from its file, for comparing two builds."""
    with h5py.File(store.path, "r") as f:
        return {
            "logmel": f["logmel"][:],
            "window_clip": f["window_clip"][:],
            "start_s": f["start_s"][:],
            "end_s": f["end_s"][:],
            "failed": dict(store.failed),
            "n_clips": int(f.attrs["n_clips"]),
        }


def assert_same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def forbid_decoding(monkeypatch) -> None:
    def refuse(path, audio):
        raise AssertionError(f"decoded {path} again: the cache should have been reused")

    monkeypatch.setattr(cache_mod, "window_file", refuse)


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> CaptionDataset:
    # 0.4 s: one padded window; 1.2 s: [0, 1], [0.5, 1.2]; 2.0 s: [0, 1], [0.5, 1.5], [1, 2].
    return make_dataset(tmp_path_factory.mktemp("clips"), [0.4, 1.2, 2.0])


@pytest.fixture(scope="module")
def corrupt(tmp_path_factory) -> dict[str, Path]:
    return make_corrupt_files(tmp_path_factory.mktemp("corrupt"))


# -- what the cache holds ----------------------------------------------------------------------


@pytest.mark.parametrize("audio", [SMALL, AudioConfig()], ids=["1s-windows", "default"])
def test_cached_logmel_equals_the_frontend_on_each_window(tmp_path, audio):
    seconds = [0.4, 1.2, 2.0] if audio is SMALL else [12.0]
    ds = make_dataset(tmp_path / "audio", seconds)
    store = build_feature_cache(ds, audio, tmp_path / "cache", progress=False)
    try:
        frontend = LogMel(audio)
        expected_windows = {0.4: 1, 1.2: 2, 2.0: 3, 12.0: 2}
        assert store.failed == {}
        assert len(store) == sum(expected_windows[s] for s in seconds)
        with h5py.File(store.path, "r") as f:
            start_s, end_s = f["start_s"][:], f["end_s"][:]
        for i, clip in enumerate(ds.clips):
            windows = list(window_file(clip.path, audio))
            assert len(windows) == expected_windows[seconds[i]]
            rows = store.clip_windows[i]
            np.testing.assert_array_equal(store.window_clip[rows], i)
            got = store.logmel(rows)  # (windows, 1, frames, n_mels)
            frames = 1 + audio.window_samples // audio.hop_length
            assert got.shape == (len(windows), 1, frames, audio.n_mels)
            assert got.dtype == torch.float32
            for k, w in enumerate(windows):
                assert len(w.samples) == audio.window_samples  # zero-padded
                with torch.no_grad():
                    want = frontend(torch.from_numpy(w.samples)[None])[0]
                torch.testing.assert_close(got[k], want, rtol=0, atol=1e-6)
                assert start_s[rows[k]] == pytest.approx(w.start_s)
                assert end_s[rows[k]] == pytest.approx(w.end_s)
        if audio is not SMALL:
            assert list(end_s) == pytest.approx([10.0, 12.0])  # [0, 10], [5, 12]
    finally:
        store.close()


def test_logmel_returns_rows_in_the_requested_order(tmp_path, clips):
    store = build_feature_cache(clips, SMALL, tmp_path, progress=False)
    try:
        everything = store.logmel(np.arange(len(store)))
        for ask in ([4, 0, 2], [5, 1, 3, 0], [2], [3, 3, 0, 3]):
            got = store.logmel(np.array(ask))
            torch.testing.assert_close(got, everything[ask], rtol=0, atol=0)
        assert store.logmel(np.array([], dtype=np.int64)).shape == (0, *everything.shape[1:])
        assert [len(w) for w in store.clip_windows] == [1, 2, 3]
    finally:
        store.close()


# -- keys and reuse ----------------------------------------------------------------------------


def test_second_call_reuses_the_file(tmp_path, clips, monkeypatch):
    first = build_feature_cache(clips, SMALL, tmp_path, progress=False)
    before = contents(first)
    mtime = first.path.stat().st_mtime_ns
    first.close()
    forbid_decoding(monkeypatch)
    second = build_feature_cache(clips, SMALL, tmp_path, progress=False)
    try:
        assert second.path == first.path and second.path.stat().st_mtime_ns == mtime
        assert_same(contents(second), before)
        assert sorted(p.name for p in tmp_path.iterdir()) == [first.path.name]
    finally:
        second.close()


def test_changed_clip_or_config_gives_a_new_file(tmp_path):
    ds = make_dataset(tmp_path / "audio", [0.4, 1.2])
    cache = tmp_path / "cache"
    base = build_feature_cache(ds, SMALL, cache, progress=False)
    base.close()
    key = feature_key(ds, SMALL)
    assert key in base.path.name and base.path.name.startswith("logmel-train-")

    # The same content under a new mtime is a different file as far as the key knows.
    st = ds.clips[0].path.stat()
    os.utime(ds.clips[0].path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    touched = feature_key(ds, SMALL)
    assert touched != key

    # Rewritten longer: new size and mtime, new windows.
    write_tone(ds.clips[1].path, 2.0, SR, seed=7)
    rewritten = build_feature_cache(ds, SMALL, cache, progress=False)
    rewritten.close()
    assert feature_key(ds, SMALL) not in (key, touched)
    assert rewritten.path != base.path and base.path.exists()
    assert [len(w) for w in rewritten.clip_windows] == [1, 3]

    other = AudioConfig(window_s=1.0, hop_s=1.0)
    assert feature_key(ds, other) != feature_key(ds, SMALL)
    coarse = build_feature_cache(ds, other, cache, progress=False)
    coarse.close()
    assert coarse.path not in (base.path, rewritten.path)
    assert [len(w) for w in coarse.clip_windows] == [1, 2]
    assert len(list(cache.glob("*.h5"))) == 3


def test_split_names_the_file(tmp_path, clips):
    odd = CaptionDataset(clips.name, "fold=1,2", clips.clips)
    store = build_feature_cache(odd, SMALL, tmp_path, progress=False)
    store.close()
    assert store.path.name.startswith("logmel-fold_1_2-")


# -- bad clips ---------------------------------------------------------------------------------


def test_undecodable_clip_is_recorded_and_skipped(tmp_path, clips, corrupt):
    bad = tmp_path / "audio" / "page.wav"
    bad.parent.mkdir()
    shutil.copy(corrupt["html"], bad)
    ds = with_clip(clips, 1, bad)
    store = build_feature_cache(ds, SMALL, tmp_path / "cache", progress=False)
    try:
        assert list(store.failed) == [1]
        assert "not an audio file" in store.failed[1] and "HTML page" in store.failed[1]
        assert [len(w) for w in store.clip_windows] == [1, 0, 3]
        assert sorted(set(store.window_clip.tolist())) == [0, 2]
        good = build_feature_cache(clips, SMALL, tmp_path / "good", progress=False)
        try:
            # The good clips' rows are the same as in a build without the bad clip.
            torch.testing.assert_close(
                store.logmel(store.clip_windows[2]), good.logmel(good.clip_windows[2])
            )
        finally:
            good.close()
    finally:
        store.close()


# -- interruption ------------------------------------------------------------------------------


def interrupt_at(monkeypatch, n: int) -> list[Path]:
    """Make the n-th decode (1-based) raise KeyboardInterrupt; returns the paths decoded."""
    calls: list[Path] = []

    def flaky(path, audio):
        calls.append(Path(path))
        if len(calls) == n:
            raise KeyboardInterrupt
        return window_file(path, audio)

    monkeypatch.setattr(cache_mod, "window_file", flaky)
    return calls


def test_interrupted_build_resumes_and_equals_a_fresh_one(tmp_path, corrupt, monkeypatch):
    audio_dir = tmp_path / "audio"
    ds = make_dataset(audio_dir, [0.4, 1.2, 0.6, 2.0, 1.0, 0.8, 1.4])
    # One bad clip before the last commit (kept) and one after it (trimmed, then redone).
    for index, name in ((0, "empty.wav"), (3, "page.wav")):
        shutil.copy(corrupt["empty" if index == 0 else "html"], audio_dir / name)
        ds = with_clip(ds, index, audio_dir / name)
    monkeypatch.setattr(cache_mod, "COMMIT_EVERY", 3)

    fresh = build_feature_cache(ds, SMALL, tmp_path / "fresh", progress=False)
    expected = contents(fresh)
    fresh.close()
    assert sorted(expected["failed"]) == [0, 3]

    cache = tmp_path / "cache"
    interrupt_at(monkeypatch, 6)  # clips 0-4 done, 0-2 committed
    with pytest.raises(KeyboardInterrupt):
        build_feature_cache(ds, SMALL, cache, progress=False)
    (partial,) = cache.iterdir()
    assert partial.name == fresh.path.name.replace(".h5", ".partial.h5")  # no final file
    with h5py.File(partial, "r") as f:
        assert int(f.attrs["clips_done"]) == 3
        # Written after the last commit, so a resume must drop them: clip 3's failure, clip 4.
        assert f["failed_clip"][:].tolist() == [0, 3]
        assert sorted(set(f["window_clip"][:].tolist())) == [1, 2, 4]

    calls = interrupt_at(monkeypatch, 0)  # never interrupts
    resumed = build_feature_cache(ds, SMALL, cache, progress=False)
    try:
        assert calls == [c.path for c in ds.clips[3:]]  # the committed clips are not redone
        assert not partial.exists() and resumed.path.name == fresh.path.name
        assert_same(contents(resumed), expected)
        assert resumed.failed == expected["failed"]
    finally:
        resumed.close()


@pytest.mark.parametrize("damage", ["garbage", "no_datasets", "stale_key"])
def test_unusable_partial_file_is_rebuilt(tmp_path, clips, damage):
    fresh = build_feature_cache(clips, SMALL, tmp_path / "fresh", progress=False)
    expected = contents(fresh)
    fresh.close()
    cache = tmp_path / "cache"
    cache.mkdir()
    partial = cache / fresh.path.name.replace(".h5", ".partial.h5")
    if damage == "garbage":
        partial.write_bytes(np.random.default_rng(0).bytes(5000))
    elif damage == "no_datasets":  # opens, but holds nothing a resume can use
        with h5py.File(partial, "w") as f:
            f.attrs.update(key=feature_key(clips, SMALL), clips_done=2)
    else:  # a complete, valid file, but of other audio: it must not be taken for this one
        other = make_dataset(tmp_path / "other", [2.0, 2.0, 2.0])
        stale = build_feature_cache(other, SMALL, tmp_path / "other-cache", progress=False)
        stale.close()
        shutil.copy(stale.path, partial)
    store = build_feature_cache(clips, SMALL, cache, progress=False)
    try:
        assert not partial.exists()
        assert_same(contents(store), expected)
    finally:
        store.close()


# -- text cache --------------------------------------------------------------------------------


class FakeEncoder:
    """A sentence encoder stand-in: a seeded vector per caption, every call recorded."""

    def __init__(self, id: str = "fake-a", dim: int = 6):
        self.id, self.dim = id, dim
        self.calls: list[list[str]] = []

    def vector(self, caption: str) -> np.ndarray:
        seed = sum(caption.encode()) + 1000 * len(self.id) + sum(self.id.encode())
        return np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)

    def encode(self, captions: list[str], batch_size: int = 32) -> torch.Tensor:
        self.calls.append(list(captions))
        return torch.from_numpy(np.stack([self.vector(c) for c in captions]))


def encoded(encoder: FakeEncoder) -> list[str]:
    return [c for call in encoder.calls for c in call]


def test_text_cache_encodes_each_unique_caption_once(tmp_path):
    cache = TextCache(tmp_path / "sub" / "text.sqlite")
    enc = FakeEncoder()
    captions = ["a dog", "rain", "a dog", "a kettle", "rain", "a dog"]
    try:
        first = cache.embed(enc, captions, batch_size=2)
        assert sorted(encoded(enc)) == ["a dog", "a kettle", "rain"]
        assert all(len(call) <= 2 for call in enc.calls)
        assert first.shape == (6, enc.dim) and first.dtype == np.float32
        for row, caption in zip(first, captions, strict=True):
            np.testing.assert_array_equal(row, enc.vector(caption))

        enc.calls.clear()
        again = cache.embed(enc, list(reversed(captions)))
        assert enc.calls == []
        np.testing.assert_array_equal(again, first[::-1])

        # One new caption among cached ones: only it is encoded.
        mixed = cache.embed(enc, ["rain", "thunder", "a dog"])
        assert encoded(enc) == ["thunder"]
        np.testing.assert_array_equal(mixed[[0, 2]], first[[1, 0]])
    finally:
        cache.close()


def test_text_cache_is_keyed_by_encoder_id(tmp_path):
    cache = TextCache(tmp_path / "text.sqlite")
    a, b = FakeEncoder("fake-a"), FakeEncoder("fake-bb")
    try:
        va = cache.embed(a, ["a dog", "rain"])
        vb = cache.embed(b, ["a dog", "rain"])
        assert encoded(b) == ["a dog", "rain"]
        assert not np.array_equal(va, vb)
        np.testing.assert_array_equal(cache.embed(a, ["rain"]), va[[1]])
        assert len(a.calls) == 1
    finally:
        cache.close()


def test_text_cache_empty_input(tmp_path):
    cache = TextCache(tmp_path / "text.sqlite")
    enc = FakeEncoder(dim=5)
    try:
        out = cache.embed(enc, [])
        assert out.shape == (0, 5) and out.dtype == np.float32
        assert enc.calls == []
    finally:
        cache.close()


def test_text_cache_persists_across_instances(tmp_path):
    path = tmp_path / "text.sqlite"
    captions = [f"caption {i}" for i in range(700)]  # more than one SQL lookup chunk (500)
    enc = FakeEncoder()
    cache = TextCache(path)
    first = cache.embed(enc, captions, batch_size=256)
    cache.close()
    assert len(encoded(enc)) == 700 and len(enc.calls) == 3

    enc.calls.clear()
    reopened = TextCache(path)
    try:
        again = reopened.embed(enc, captions)
        assert enc.calls == []
        np.testing.assert_array_equal(again, first)
    finally:
        reopened.close()
