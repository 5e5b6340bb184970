"""Windowing: exact boundaries, padding of the last window, and independence from block sizes."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.audio.windows import Window, window_bounds, window_file, windows
from earshot.config import AudioConfig
from earshot.testing.audio import write_tone

SR = 100  # small rate: seconds stay readable and arrays tiny


def ramp(seconds: float) -> np.ndarray:
    """Sample i holds i + 1, so every window's content shows where it came from."""
    return np.arange(1, round(seconds * SR) + 1, dtype=np.float32)


def spans(ws: list[Window]) -> list[tuple[float, float]]:
    return [(w.start_s, w.end_s) for w in ws]


def split(x: np.ndarray, sizes: list[int]) -> list[np.ndarray]:
    """x cut into consecutive blocks of the given sizes, cycling, the last one shorter."""
    blocks, i, k = [], 0, 0
    while i < len(x):
        blocks.append(x[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return blocks


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        (23, [(0, 10), (5, 15), (10, 20), (15, 23)]),
        (20, [(0, 10), (5, 15), (10, 20)]),
        (10, [(0, 10)]),
        (12, [(0, 10), (5, 12)]),
        (3.5, [(0, 3.5)]),
        (0.01, [(0, 0.01)]),
        (0, []),
    ],
)
def test_window_spans(seconds, expected):
    ws = list(windows([ramp(seconds)], SR))
    assert spans(ws) == expected
    assert window_bounds(round(seconds * SR), 10 * SR, 5 * SR) == [
        (round(a * SR), round(b * SR)) for a, b in expected
    ]


def test_hop_equal_to_window_tiles_the_signal():
    ws = list(windows([ramp(25)], SR, window_s=10, hop_s=10))
    assert spans(ws) == [(0, 10), (10, 20), (20, 25)]
    ws = list(windows([ramp(20)], SR, window_s=10, hop_s=10))
    assert spans(ws) == [(0, 10), (10, 20)]


def test_windows_hold_the_right_samples_and_the_last_is_zero_padded():
    x = ramp(23)
    ws = list(windows([x], SR))
    for w in ws:
        assert w.samples.dtype == np.float32 and w.samples.shape == (10 * SR,)
    for w in ws[:3]:
        start = round(w.start_s * SR)
        np.testing.assert_array_equal(w.samples, x[start : start + 10 * SR])
    last = ws[-1].samples
    np.testing.assert_array_equal(last[: 8 * SR], x[15 * SR :])
    assert not last[8 * SR :].any()


def test_short_clip_is_one_padded_window():
    (w,) = windows([ramp(3)], SR)
    assert (w.start_s, w.end_s) == (0, 3)
    np.testing.assert_array_equal(w.samples[: 3 * SR], ramp(3))
    assert not w.samples[3 * SR :].any()


@pytest.mark.parametrize("seconds", [0.37, 9.99, 10, 10.01, 14.99, 15, 20, 23, 47.3])
@pytest.mark.parametrize("sizes", [[1], [7], [499], [500], [1000], [3, 1700, 1, 0, 250], [10**6]])
def test_block_sizes_do_not_change_the_windows(seconds, sizes):
    x = ramp(seconds)
    one = list(windows([x], SR))
    many = list(windows(split(x, sizes), SR))
    assert spans(many) == spans(one)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_array_equal(a.samples, b.samples)
    n = len(x)
    assert [(round(w.start_s * SR), round(w.end_s * SR)) for w in one] == window_bounds(
        n, 10 * SR, 5 * SR
    )


def test_windows_come_out_before_the_input_ends():
    consumed = 0

    def endless():
        nonlocal consumed
        while True:
            consumed += 1
            yield np.ones(70, dtype=np.float32)

    it = windows(endless(), SR)
    first = [next(it) for _ in range(3)]
    assert spans(first) == [(0, 10), (5, 15), (10, 20)]
    # 20 s of 0.7 s blocks: ~29 blocks; a buffered implementation would never return.
    assert consumed <= 20 * SR // 70 + 2


def test_windows_accept_float64_and_lists():
    ws = list(windows([np.zeros(700), [0.5] * 600], SR))
    assert spans(ws) == [(0, 10), (5, 13)]
    assert all(w.samples.dtype == np.float32 for w in ws)


def test_windows_reject_multichannel_blocks():
    with pytest.raises(ValueError, match="1-D"):
        list(windows([np.zeros((100, 2))], SR))


@pytest.mark.parametrize(
    ("rate", "window_s", "hop_s"), [(0, 10, 5), (SR, 0, 0), (SR, 10, 0), (SR, 10, 11)]
)
def test_bad_window_settings_are_value_errors(rate, window_s, hop_s):
    with pytest.raises(ValueError):
        windows([ramp(1)], rate, window_s, hop_s)


def test_window_file_uses_the_model_settings(tmp_path):
    audio = AudioConfig(sample_rate=16000, fmax=8000.0, window_s=2.0, hop_s=1.0)
    path = write_tone(tmp_path / "x.wav", 4.6, 44100)
    ws = list(window_file(path, audio))
    assert [(w.start_s, round(w.end_s, 9)) for w in ws] == [(0, 2), (1, 3), (2, 4), (3, 4.6)]
    assert all(w.samples.shape == (2 * 16000,) for w in ws)
