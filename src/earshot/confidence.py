"""Scores a user can act on: a hit's confidence (0-1) and band (good / weak / none).

A raw cosine means different things for different queries and models (a wrong 0.68 in one query
beats a right 0.66 in another), so a hit is judged by two numbers the Searcher has at search
time: the cosine itself, and its z-score against the same query's scores over a fixed random
sample of the catalogue's windows (how far the hit stands out from what the catalogue holds in
general). A logistic calibration maps them to the probability that the hit is relevant:

    confidence = sigmoid(a * cosine + b * z + c)

fitted per model on labelled validation data by `bench/bench_confidence.py`, which writes it as
`calibration.json` in the model folder (its figures on test data are in the README). A model
folder without one (a user's own model, the tiny test models) gets `DEFAULT`. A search by example
has its own entry, for audio-to-audio scores sit higher than text-to-audio ones.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CALIBRATION_FILE = "calibration.json"
SAMPLE_WINDOWS = 4096  # catalogue windows a query's score distribution is measured on
GOOD = "good"
WEAK = "weak"
NONE = "none"


@dataclass(frozen=True)
class Calibration:
    a: float  # weight of the raw cosine
    b: float  # weight of the z-score
    c: float  # intercept
    good: float = 0.5  # confidence from which a hit is "good"
    weak: float = 0.2  # ... "weak"; below: "none"
    source: str = "default"

    def confidence(self, cosine: float, z: float) -> float:
        x = self.a * float(cosine) + self.b * float(z) + self.c
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, x))))

    def band(self, confidence: float) -> str:
        return GOOD if confidence >= self.good else WEAK if confidence >= self.weak else NONE

    def as_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "c": self.c, "good": self.good, "weak": self.weak}


# For models without a fitted calibration: the z-score alone, a hit 3 standard deviations above
# the catalogue's typical score is even odds (what the fitted models roughly share).
DEFAULT = Calibration(a=0.0, b=1.5, c=-4.5)
DEFAULTS = {"text": DEFAULT, "example": DEFAULT}


def load_calibrations(model) -> dict[str, Calibration]:
    """{"text": ..., "example": ...} from the model folder's calibration.json, where it names
    this model's id; DEFAULTS otherwise (a missing or unreadable file is not an error)."""
    source = getattr(model, "source", None)
    if not source:
        return dict(DEFAULTS)
    path = Path(source) / CALIBRATION_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return dict(DEFAULTS)
    from earshot.model.io import model_id

    try:
        if doc.get("model_id") not in (None, model_id(model)):
            return dict(DEFAULTS)
        out = dict(DEFAULTS)
        for kind in ("text", "example"):
            entry = doc.get(kind)
            if isinstance(entry, dict):
                out[kind] = Calibration(
                    float(entry["a"]),
                    float(entry["b"]),
                    float(entry["c"]),
                    float(entry.get("good", 0.5)),
                    float(entry.get("weak", 0.2)),
                    source=str(path),
                )
        return out
    except (KeyError, TypeError, ValueError, AttributeError):
        return dict(DEFAULTS)


def score_stats(query: np.ndarray, sample: np.ndarray) -> tuple[float, float]:
    """(mean, standard deviation) of `query`'s cosines over `sample` (n, d) windows."""
    if len(sample) == 0:
        return 0.0, 1.0
    scores = sample @ np.asarray(query, dtype=np.float32)
    return float(scores.mean()), max(float(scores.std()), 1e-3)


class SampleMoments:
    """`score_stats` against one sample for any query, from the sample's mean and covariance.

    The mean of the cosines is mean·q and their variance qᵀ·cov·q (population, as np.std), in
    float64: a (d, d) product per query instead of an (n, d) one, 4096 → 300 rows for the
    catalogue's sample. Measured (bench/bench_search_stages.py): `sample @ query` over 4096 ×
    300 float32 is handed to OpenBLAS's threads, and on a busy 2-core machine a search waited
    ~20 ms for the second one; the (300, 300) product is answered on the calling thread in
    ~0.03 ms. Same figures as `score_stats` to ~1e-7."""

    def __init__(self, sample: np.ndarray):
        x = np.asarray(sample, dtype=np.float64)  # (n, d)
        self.n = len(x)
        self.mean = x.mean(axis=0) if self.n else np.zeros(x.shape[1])  # (d,)
        centred = x - self.mean
        self.cov = centred.T @ centred / max(self.n, 1)  # (d, d)

    def stats(self, query: np.ndarray) -> tuple[float, float]:
        if self.n == 0:
            return 0.0, 1.0
        q = np.asarray(query, dtype=np.float64)
        var = float(q @ (self.cov @ q))
        return float(self.mean @ q), max(math.sqrt(max(var, 0.0)), 1e-3)


def zscore(score: float, stats: tuple[float, float]) -> float:
    return (float(score) - stats[0]) / stats[1]


def fit(cosines: np.ndarray, z: np.ndarray, relevant: np.ndarray, l2: float = 1e-3):
    """(a, b, c) of the logistic regression of `relevant` on (cosine, z): Newton's method on
    the log-likelihood with a small ridge, so it needs nothing beyond NumPy."""
    x = np.column_stack([cosines, z, np.ones(len(z))]).astype(np.float64)
    y = np.asarray(relevant, dtype=np.float64)
    w = np.zeros(3)
    for _ in range(100):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -60, 60)))
        grad = x.T @ (p - y) + l2 * np.r_[w[:2], 0.0]
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.diag([1.0, 1.0, 0.0])
        step = np.linalg.solve(hess + 1e-9 * np.eye(3), grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return float(w[0]), float(w[1]), float(w[2])
