"""scripts/pool_experiment.py's short-clip modes (MODEL_CARD-general.md, "Short clips"): which
windows each changes and what it gives the backbone instead of the zero-padded window."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.audio.windows import windows

SR = 100
WINDOW = 10 * SR


@pytest.fixture(scope="module")
def pe(pool_experiment):
    return pool_experiment


def wins(seconds: float):
    return list(windows([np.arange(1, round(seconds * SR) + 1, dtype=np.float32)], SR))


def test_unpadded_gives_each_partial_window_its_own_length_at_least_min_s(pe):
    assert pe.MIN_S == 1.0
    got = pe.short_inputs(wins(0.4), SR, WINDOW, "unpadded")
    assert list(got) == [0] and len(got[0]) == SR  # 0.4 s of signal, zero-padded to 1 s
    np.testing.assert_array_equal(got[0][:40], np.arange(1, 41))
    assert not got[0][40:].any()
    got = pe.short_inputs(wins(3.5), SR, WINDOW, "unpadded")
    assert len(got[0]) == 350
    ws = wins(23)  # [0, 10], [5, 15], [10, 20], [15, 23]: only the last is partial
    got = pe.short_inputs(ws, SR, WINDOW, "unpadded")
    assert list(got) == [3] and len(got[3]) == 800
    np.testing.assert_array_equal(got[3], ws[3].samples[:800])
    assert pe.short_inputs(wins(20), SR, WINDOW, "unpadded") == {}


def test_repeat_tiles_only_clips_shorter_than_its_threshold(pe):
    got = pe.short_inputs(wins(0.4), SR, WINDOW, "repeat1.5")
    np.testing.assert_array_equal(got[0], np.tile(np.arange(1, 41, dtype=np.float32), 25))
    assert pe.short_inputs(wins(2.0), SR, WINDOW, "repeat1.5") == {}
    assert list(pe.short_inputs(wins(2.0), SR, WINDOW, "repeat2.5")) == [0]
    assert pe.short_inputs(wins(12), SR, WINDOW, "repeat2.5") == {}
    with pytest.raises(ValueError, match="unknown short mode"):
        pe.short_inputs(wins(1), SR, WINDOW, "stretch")
