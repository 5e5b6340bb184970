"""earshot.confidence: the logistic calibration, the score statistics and the bands."""

from __future__ import annotations

import numpy as np
import pytest

from earshot.confidence import DEFAULT, Calibration, SampleMoments, fit, score_stats, zscore


def test_fit_recovers_known_weights():
    rng = np.random.default_rng(0)
    cos = rng.uniform(-0.2, 0.8, 20000)
    z = rng.normal(2.0, 1.5, 20000)
    a, b, c = 6.0, 1.2, -4.0
    p = 1 / (1 + np.exp(-(a * cos + b * z + c)))
    relevant = rng.random(20000) < p
    fa, fb, fc = fit(cos, z, relevant)
    assert (fa, fb, fc) == pytest.approx((a, b, c), abs=0.35)


def test_fit_survives_separable_data():
    cos = np.array([0.1, 0.2, 0.7, 0.8])
    z = np.array([0.0, 0.5, 3.0, 4.0])
    a, b, c = fit(cos, z, np.array([False, False, True, True]))
    cal = Calibration(a, b, c)
    assert all(np.isfinite((a, b, c)))
    assert cal.confidence(0.8, 4.0) > 0.9 > 0.1 > cal.confidence(0.1, 0.0)


def test_score_stats_and_zscore():
    sample = np.eye(4, dtype=np.float32)
    query = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
    mean, std = score_stats(query, sample)
    assert mean == pytest.approx(0.25) and std == pytest.approx(np.std([1, 0, 0, 0]))
    assert zscore(1.0, (mean, std)) == pytest.approx(0.75 / std)
    assert score_stats(query, np.zeros((0, 4), np.float32)) == (0.0, 1.0)


def test_sample_moments_give_score_stats_without_scoring_the_sample():
    rng = np.random.default_rng(0)
    sample = rng.standard_normal((500, 32)).astype(np.float32)
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    moments = SampleMoments(sample)
    for query in rng.standard_normal((20, 32)).astype(np.float32):
        query /= np.linalg.norm(query)
        assert moments.stats(query) == pytest.approx(score_stats(query, sample), abs=1e-6)
    assert SampleMoments(np.zeros((0, 32), np.float32)).stats(query) == (0.0, 1.0)
    flat = SampleMoments(np.ones((3, 32), np.float32))  # every window alike: std floored
    assert flat.stats(query) == pytest.approx(score_stats(query, np.ones((3, 32), np.float32)))


def test_bands_follow_the_thresholds():
    cal = Calibration(0.0, 0.0, 0.0, good=0.6, weak=0.3)
    assert [cal.band(x) for x in (0.6, 0.59, 0.3, 0.29)] == ["good", "weak", "weak", "none"]
    assert DEFAULT.band(DEFAULT.confidence(0.9, 6.0)) == "good"
    assert DEFAULT.band(DEFAULT.confidence(0.9, 1.0)) == "none"
    assert 0.0 <= Calibration(1e9, 0, 0).confidence(-1, 0) <= 1.0  # no overflow


@pytest.mark.parametrize(
    "name",
    ["compact", "offline", pytest.param("general", marks=pytest.mark.slow)],  # general: ~40 s
)
def test_the_shipped_models_calibrations_name_them(name):
    """A retrained model whose calibration.json still names the old id would silently fall back
    to DEFAULT: rerun bench/bench_confidence.py --write-calibration."""
    import json
    from pathlib import Path

    from earshot.api import resolve_query_model
    from earshot.confidence import load_calibrations
    from earshot.errors import ModelLoadError
    from earshot.model.io import model_id

    try:
        model = resolve_query_model(name)
    except ModelLoadError as e:  # the general model's backbone is not on this machine
        pytest.skip(str(e).splitlines()[0])
    doc = json.loads((Path(model.source) / "calibration.json").read_text())
    assert doc["model_id"] == model_id(model)
    loaded = load_calibrations(model)
    assert loaded["text"].source.endswith("calibration.json")
    assert loaded["text"].a == doc["text"]["a"] and loaded["example"].c == doc["example"]["c"]
