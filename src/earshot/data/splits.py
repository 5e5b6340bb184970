"""How a recipe's labelled folders split into train / val / test.

Each `[[source]]` of a recipe names a `labels.csv` folder, a `train` and a `test` row filter
("fold=1,2,4", or "all"), and optionally `val = { group = COLUMN, fraction = F }`, which carves
validation out of the training rows by whole groups (recordings): a group goes to val when a
hash of its name falls under F, so the carve is stable as rows are added. `every_label = true`
also gives val one group of each label the hash missed (where the label has two or more). The
same column names the recording each clip was cut from, which held-out reports resample for
their recording-level intervals.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from earshot.data.datasets import DatasetError, _read_csv, _require
from earshot.data.datasets import parse_split_filter as _parse_filter

SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SourceSpec:
    name: str
    folder: Path
    label_column: str = "label"
    train: str = "all"
    test: str | None = None
    val_group: str | None = None  # column whose values go to val together (a recording)
    val_fraction: float = 0.0
    val_every_label: bool = False  # val holds at least one group of every label that has two
    tags: tuple[str, ...] = ()
    weight: float = 1.0
    label_map: dict[str, str] = field(default_factory=dict)  # CSV label → recipe label
    # Test carved by whole groups (recordings), as val is, for folders with no split column:
    # `test = { group = "recording", fraction = 0.2 }`. Then `test` is None.
    test_group: str | None = None
    test_fraction: float = 0.0
    # ... plus, for each label with `test_every_label` or more groups and none in test, its
    # group with the lowest hash: a test split that scores every label seen often enough.
    test_every_label: int = 0
    # Every label of the CSV is the recipe's, described by its own words (`auto_labels`).
    auto_labels: bool = False
    # Labels held out of training entirely (their clips are test only, keyed
    # `<name>-zeroshot/...` so reports score them apart); the recipe picks them (is_zeroshot).
    zeroshot_labels: frozenset[str] = frozenset()
    # ... and labels held out for validation alike (val only, `<name>-zeroshot/...`), so model
    # selection also sees sounds never trained on, without touching the test labels.
    zeroshot_val_labels: frozenset[str] = frozenset()

    @property
    def has_test(self) -> bool:
        return self.test is not None or self.test_fraction > 0


def is_zeroshot(label: str, fraction: float) -> bool:
    """Whether a recipe holding out `fraction` of its CSV labels holds out this one: by a hash
    of the label alone, so every source agrees."""
    return stable_hash(f"zeroshot\0{label}") < fraction * 2**64


def source_rows(
    source: SourceSpec, split: str, labels: Collection[str], problems: Counter
) -> Iterator[tuple[str, Path, str, str]]:
    """The rows of `source` in `split`, as (clip key, audio path, label, recording).

    Rows whose label is not among `labels`, repeated rows and missing files are skipped and
    counted in `problems`. A source with a test filter refuses train and test filters that
    share a file, whichever split is asked for.
    """
    csv_path = source.folder / "labels.csv"
    rows = _read_csv(csv_path)
    _require(csv_path, rows, ["file", source.label_column])
    if source.test_fraction > 0:
        yield from _carved_rows(source, split, labels, problems, rows, csv_path)
        return
    spec = source.test if split == "test" else source.train
    if spec is None:
        return
    if source.test is not None:  # whatever the split: a test clip must never be trained on
        tested = {r["file"] for r in _select(rows, source.test, csv_path)}
        both = tested & {r["file"] for r in _select(rows, source.train, csv_path)}
        if both:
            raise DatasetError(
                f"source '{source.name}': {len(both)} file(s) are in both its train "
                f"('{source.train}') and test ('{source.test}') splits, e.g. "
                f"'{sorted(both)[0]}'; make the two filters disjoint"
            )
    rows = _select(rows, spec, csv_path)
    yield from _rows_of(source, split, labels, problems, rows, csv_path)


def _carved_rows(
    source: SourceSpec,
    split: str,
    labels: Collection[str],
    problems: Counter,
    rows: list[dict[str, str]],
    csv_path: Path,
) -> Iterator[tuple[str, Path, str, str]]:
    """Test by whole groups: a group is test when a hash of its name (not of the source's,
    so two sources over one folder agree on a shared recording) falls under the fraction, and
    every clip of a zero-shot label is test; the rest is train (and val)."""
    rows = _select(rows, source.train, csv_path)
    group = source.test_group or "file"
    if group not in rows[0]:
        raise DatasetError(f"'{csv_path}' has no column '{group}' to carve test from")
    cut = source.test_fraction * 2**64

    def label_of(r: dict[str, str]) -> str:
        label = (r[source.label_column] or "").strip()
        return source.label_map.get(label, label)

    zeroshot = {label_of(r) for r in rows} & source.zeroshot_labels
    # A recording with a clip of a zero-shot label is test as a whole: a variant of the
    # same take under another label must not teach the model the held-out sound.
    held_groups = {r[group] for r in rows if label_of(r) in zeroshot}
    in_test = [r[group] in held_groups or stable_hash(f"test\0{r[group]}") < cut for r in rows]
    if source.test_every_label:
        groups_of: dict[str, set[str]] = {}
        tested: set[str] = set()
        for r, t in zip(rows, in_test, strict=True):
            groups_of.setdefault(label_of(r), set()).add(r[group])
            if t:
                tested.add(label_of(r))
        added = {
            min(groups, key=lambda g: stable_hash(f"test\0{g}"))
            for label, groups in groups_of.items()
            if label not in tested and len(groups) >= source.test_every_label
        }
        in_test = [t or r[group] in added for r, t in zip(rows, in_test, strict=True)]
    if split == "test":
        picked = [r for r, t in zip(rows, in_test, strict=True) if t]
        plain = [r for r in picked if label_of(r) not in zeroshot]
        held = [r for r in picked if label_of(r) in zeroshot]
        yield from _rows_of(source, split, labels, problems, plain, csv_path)
        yield from _rows_of(source, split, labels, problems, held, csv_path, suffix="-zeroshot")
        return
    rest = [r for r, t in zip(rows, in_test, strict=True) if not t]
    val_zs = {label_of(r) for r in rest} & source.zeroshot_val_labels
    if val_zs:
        # Recordings with a clip of a val zero-shot label are val as a whole, scored apart.
        val_groups = {r[group] for r in rest if label_of(r) in val_zs}
        held = [r for r in rest if r[group] in val_groups]
        rest = [r for r in rest if r[group] not in val_groups]
        if split == "val":
            plain = [r for r in held if label_of(r) not in val_zs]
            yield from _rows_of(
                source, split, labels, problems, plain, csv_path, suffix="", val_all=True
            )
            zs = [r for r in held if label_of(r) in val_zs]
            yield from _rows_of(
                source, split, labels, problems, zs, csv_path, suffix="-zeroshot", val_all=True
            )
    yield from _rows_of(source, split, labels, problems, rest, csv_path)


def _rows_of(
    source: SourceSpec,
    split: str,
    labels: Collection[str],
    problems: Counter,
    rows: list[dict[str, str]],
    csv_path: Path,
    suffix: str = "",
    val_all: bool = False,
) -> Iterator[tuple[str, Path, str, str]]:
    if not rows:
        return
    if val_all:  # rows that are val whatever the carve says (val zero-shot recordings)
        pass
    elif split != "test" and source.val_fraction > 0:
        group = source.val_group or "file"
        if group not in rows[0]:
            raise DatasetError(f"'{csv_path}' has no column '{group}' to carve val from")
        in_val = [
            stable_hash(f"{source.name}\0{r[group]}") < source.val_fraction * 2**64 for r in rows
        ]
        if source.val_every_label:
            in_val = _every_label_in_val(source, rows, group, in_val)
        rows = [r for r, v in zip(rows, in_val, strict=True) if v == (split == "val")]
    elif split == "val":
        return
    seen = set()
    for r in rows:
        file = (r["file"] or "").strip()
        label = (r[source.label_column] or "").strip()
        label = source.label_map.get(label, label)
        path = source.folder / file
        if not label or label not in labels:
            problems[f"{source.name} rows with a label the recipe does not describe"] += 1
            continue
        if file in seen:
            problems[f"{source.name} duplicate rows"] += 1
            continue
        if not path.is_file():
            problems[f"{source.name} missing audio files"] += 1
            continue
        seen.add(file)
        # The column val is carved by names the recording a clip was cut from.
        recording = (r.get(source.val_group or "file") or file).strip()
        yield f"{source.name}{suffix}/{file}", path, label, f"{source.name}/{recording}"


def _every_label_in_val(
    source: SourceSpec, rows: list[dict[str, str]], group: str, in_val: list[bool]
) -> list[bool]:
    """The hash carve, plus, for each label with no val rows but two or more groups, its group
    with the lowest hash: validation then scores every label (a 15 % carve of 16 recordings can
    miss a label entirely), and each such label keeps the rest of its groups for training."""
    groups_of: dict[str, set[str]] = {}
    has_val: set[str] = set()
    for r, v in zip(rows, in_val, strict=True):
        label = (r[source.label_column] or "").strip()
        label = source.label_map.get(label, label)
        groups_of.setdefault(label, set()).add(r[group])
        if v:
            has_val.add(label)
    added = {
        min(groups, key=lambda g: stable_hash(f"{source.name}\0{g}"))
        for label, groups in groups_of.items()
        if label not in has_val and len(groups) >= 2
    }
    return [v or r[group] in added for r, v in zip(rows, in_val, strict=True)]


def stable_hash(text: str) -> int:
    """A stable 64-bit hash of `text` (the val carve, and any fixed-but-arbitrary order)."""
    return int.from_bytes(hashlib.sha1(text.encode()).digest()[:8], "big")


def _select(rows: list[dict[str, str]], spec: str, csv_path: Path) -> list[dict[str, str]]:
    if spec == "all":
        return rows
    negate = "!=" in spec  # `source!=a,b`: every row but those
    column, values = _parse_filter(spec.replace("!=", "=", 1))
    if column not in rows[0]:
        raise DatasetError(f"'{csv_path}' has no column '{column}' (split filter '{spec}')")
    picked = [r for r in rows if ((r[column] or "").strip() in values) != negate]
    if not picked:
        raise DatasetError(f"no rows of '{csv_path}' match '{spec}'")
    return picked
