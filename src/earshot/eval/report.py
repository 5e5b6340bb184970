"""Retrieval reports on disk (JSON + Markdown) and in the terminal.

A report is the dict `retrieval_report` / `bidirectional_report` return, plus whatever metadata
the caller adds (model, dataset, split, ...). Its entries are read by shape, not by name:

* a **metric**: a dict with a "value" (and usually "ci95": [low, high]);
* a **section**: a dict holding metrics, e.g. one per retrieval direction;
* anything else is **metadata**, printed as "key: value".

So a new metric or metadata key needs no change here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from earshot.fsutil import atomic_write_text


def _is_metric(v) -> bool:
    return isinstance(v, dict) and "value" in v


def _is_section(v) -> bool:
    return isinstance(v, dict) and any(_is_metric(x) for x in v.values())


def _split(d: dict) -> tuple[dict, dict, dict]:
    """(metadata, metrics, sections) of one level of a report, in their original order."""
    meta = {k: v for k, v in d.items() if not _is_metric(v) and not _is_section(v)}
    metrics = {k: v for k, v in d.items() if _is_metric(v)}
    sections = {k: v for k, v in d.items() if _is_section(v)}
    return meta, metrics, sections


def _number(x) -> str:
    return f"{x:.3f}" if isinstance(x, float | np.floating) else str(x)


def _ci(m: dict) -> str:
    ci = m.get("ci95")
    return f"[{_number(ci[0])}, {_number(ci[1])}]" if ci is not None else ""


def _plain(v) -> str:
    """A metadata value as one line of text: lists and dicts as compact JSON."""
    if isinstance(v, dict | list | tuple):
        return json.dumps(v, default=_jsonable, ensure_ascii=False)
    return _number(v)


def _jsonable(x):
    """json.dumps fallback: numpy scalars/arrays and paths, which reports often carry."""
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"report value of type {type(x).__name__} cannot be written as JSON: {x!r}")


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _markdown_level(d: dict, heading: str, level: int) -> list[str]:
    meta, metrics, sections = _split(d)
    lines = [f"{'#' * level} {heading}", ""]
    if meta:
        lines += [f"- **{_md_cell(str(k))}**: {_md_cell(_plain(v))}" for k, v in meta.items()]
        lines.append("")
    if metrics:
        lines += ["| metric | value | 95% CI |", "|---|---:|---|"]
        lines += [
            f"| {_md_cell(str(k))} | {_number(m['value'])} | {_ci(m)} |" for k, m in metrics.items()
        ]
        lines.append("")
    for k, sub in sections.items():
        lines += _markdown_level(sub, str(k), level + 1)
    return lines


def to_markdown(report: dict, title: str = "Retrieval report") -> str:
    """The report as Markdown: metadata bullets, then a metric/value/95% CI table per section."""
    return "\n".join(_markdown_level(report, title, 1)).rstrip() + "\n"


def _table_level(d: dict, indent: str) -> list[str]:
    meta, metrics, sections = _split(d)
    lines = [f"{indent}{k}: {_plain(v)}" for k, v in meta.items()]
    if metrics:
        rows = [(str(k), _number(m["value"]), _ci(m)) for k, m in metrics.items()]
        rows.insert(0, ("metric", "value", "95% CI"))
        w = [max(len(r[i]) for r in rows) for i in range(3)]
        for name, value, ci in rows:
            lines.append(f"{indent}{name:<{w[0]}}  {value:>{w[1]}}  {ci}".rstrip())
    for k, sub in sections.items():
        lines += ["", f"{indent}{k}"]
        lines += _table_level(sub, indent + "  ")
    return lines


def format_table(report: dict) -> str:
    """The report as aligned plain text, for printing in a terminal."""
    return "\n".join(_table_level(report, "")).strip("\n")


def _write_atomic(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder, so a reader never sees half a report."""
    atomic_write_text(path, text)


def write_report(report: dict, out_dir: str | Path, stem: str = "report") -> tuple[Path, Path]:
    """Write `<stem>.json` and `<stem>.md` into out_dir (created if needed), each atomically.

    The JSON holds the report exactly (full precision); the Markdown rounds to 3 decimals.
    Returns (json_path, md_path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"
    # Serialise both before writing either: a bad value must not leave one file behind.
    json_text = json.dumps(report, indent=2, ensure_ascii=False, default=_jsonable) + "\n"
    md_text = to_markdown(report)
    _write_atomic(json_path, json_text)
    _write_atomic(md_path, md_text)
    return json_path, md_path
