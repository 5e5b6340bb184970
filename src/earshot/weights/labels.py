"""AudioSet's class list (`class_labels_indices.csv`): the tag names of a 527-way head."""

from __future__ import annotations

import csv
from pathlib import Path

from earshot.errors import ModelLoadError

# -- AudioSet labels ------------------------------------------------------------------------

AUDIOSET_CLASSES = 527


def read_audioset_labels(path: str | Path, n_classes: int = AUDIOSET_CLASSES) -> list[str]:
    """The display names of `class_labels_indices.csv`, in index order.

    Checks the header (`index,mid,display_name`), that the indices run 0..n-1 in order and
    that there are `n_classes` rows; any deviation is a ModelLoadError naming the line.
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ModelLoadError(f"cannot read AudioSet labels '{path}': {e}") from None
    if not rows or [c.strip() for c in rows[0]] != ["index", "mid", "display_name"]:
        raise ModelLoadError(
            f"AudioSet labels '{path}': the header must be index,mid,display_name, "
            f"not {','.join(rows[0]) if rows else '(empty file)'}"
        )
    names: list[str] = []
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != 3 or row[0].strip() != str(len(names)) or not row[2].strip():
            raise ModelLoadError(
                f"AudioSet labels '{path}' line {line}: expected '{len(names)},<mid>,<name>', "
                f"got {row!r}"
            )
        names.append(row[2].strip())
    if len(names) != n_classes:
        raise ModelLoadError(
            f"AudioSet labels '{path}': {len(names)} classes, expected {n_classes}"
        )
    return names
