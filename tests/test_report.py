"""Reports on disk and in the terminal: exact JSON, readable Markdown, atomic writes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from earshot.eval.metrics import bidirectional_report, retrieval_report
from earshot.eval.report import format_table, to_markdown, write_report


@pytest.fixture(scope="module")
def report() -> dict:
    rng = np.random.default_rng(0)
    c2c = rng.permutation(np.repeat(np.arange(6), 5))
    scores = rng.standard_normal((30, 6))
    scores[np.arange(30), c2c] += 1.0
    return {
        "model": "earshot-cnn14-minilm",
        "dataset": "clotho",
        "split": "evaluation",
        "n_params": np.int64(81_000_000),  # numpy scalars are common in metadata
        **bidirectional_report(scores, c2c, n_boot=100),
    }


def test_json_round_trips_exactly(tmp_path, report):
    json_path, md_path = write_report(report, tmp_path / "out", stem="clotho-eval")
    assert (json_path.name, md_path.name) == ("clotho-eval.json", "clotho-eval.md")
    loaded = json.loads(json_path.read_text(encoding="utf-8"))
    assert loaded == {**report, "n_params": 81_000_000}
    assert loaded["text_to_audio"]["direction"] == "text→audio"  # not \u-escaped
    assert "text→audio" in json_path.read_text(encoding="utf-8")


def test_markdown_has_metadata_and_one_table_per_direction(tmp_path, report):
    _, md_path = write_report(report, tmp_path)
    md = md_path.read_text(encoding="utf-8")
    for line in (
        "- **model**: earshot-cnn14-minilm",
        "- **split**: evaluation",
        "- **n_params**: 81000000",
        "## text_to_audio",
        "## audio_to_text",
        "- **direction**: audio→text",
    ):
        assert line in md.splitlines(), line
    assert md.count("| metric | value | 95% CI |") == 2
    r1 = report["text_to_audio"]["R@1"]
    lo, hi = r1["ci95"]
    assert f"| R@1 | {r1['value']:.3f} | [{lo:.3f}, {hi:.3f}] |" in md


def test_single_direction_report_and_pipes_in_metadata():
    rng = np.random.default_rng(1)
    rep = {"model": "a|b", **retrieval_report(rng.random((12, 5)), rng.integers(0, 5, 12))}
    md = to_markdown(rep, title="Eval")
    assert md.startswith("# Eval\n")
    assert "- **model**: a\\|b" in md  # a raw pipe would split the Markdown line
    assert md.count("| metric | value | 95% CI |") == 1
    assert "| mAP@10 |" in md


def test_format_table_aligns_columns(report):
    text = format_table(report)
    assert text.splitlines()[0] == "model: earshot-cnn14-minilm"
    t2a = report["text_to_audio"]
    rows = [line for line in text.splitlines() if line.strip().startswith(("metric", "R@", "mAP"))]
    assert len(rows) == 10  # header, 3 recalls and mAP, per direction
    # Values end in the same column within each direction's table.
    ends = {line.index("  [") for line in rows if "[" in line}
    assert len(ends) <= 2
    assert f"{t2a['mAP@10']['value']:.3f}" in text
    assert "\naudio_to_text\n" in text


def test_rewrite_replaces_files_and_leaves_no_temporaries(tmp_path, report):
    write_report({"model": "old", "R@1": {"value": 0.5, "ci95": [0.4, 0.6]}}, tmp_path)
    json_path, _ = write_report(report, tmp_path)
    assert json.loads(json_path.read_text(encoding="utf-8"))["model"] == "earshot-cnn14-minilm"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "report.md"]


def test_unserialisable_value_raises_and_writes_nothing(tmp_path):
    bad = {"model": object(), "R@1": {"value": 0.5, "ci95": [0.4, 0.6]}}
    with pytest.raises(TypeError, match="cannot be written as JSON"):
        write_report(bad, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_reports_are_readable_by_others_under_the_usual_umask(tmp_path):
    import os
    import stat

    old = os.umask(0o022)
    try:
        paths = write_report({"split": "x", "clips": 1}, tmp_path / "out", stem="r")
    finally:
        os.umask(old)
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path
