"""Captioned sound collections: Clotho v2 folders, Clotho's long CSV, and `labels.csv` folders.

Every loader returns a `CaptionDataset`: clips with their captions (and labels where the data
has them), plus the problems found on the way, counted, so a user sees "3 audio files missing"
rather than a stack trace halfway through an epoch.
"""

from __future__ import annotations

import csv
import warnings
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from earshot.errors import DatasetError

SPLITS = ("development", "validation", "evaluation")
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff")

# Captions for label-only data: a label alone is not how people describe sounds, so each label
# becomes a few plain sentences. (The default model's training data has far richer text.)
LABEL_TEMPLATES = (
    "{label}",
    "the sound of {label}",
    "a recording of {label}",
    "{label} can be heard",
    "someone recorded {label}",
)


@dataclass(frozen=True)
class Clip:
    key: str  # unique within the dataset: the audio path relative to its root
    path: Path
    captions: tuple[str, ...]
    label: str | None = None
    # Recipes (`earshot.data.recipe`) say more: the clip's tags (its label, and what else is
    # true of it: "dog", "speech"...), each caption's tags (a caption matches every clip whose
    # tags include the caption's), and how often training draws the clip.
    tags: frozenset[str] = frozenset()
    caption_tags: tuple[frozenset[str], ...] = ()
    weight: float = 1.0
    # The recording the clip was cut from ("" = its own): clips of one recording are not
    # independent samples, so confidence intervals resample recordings.
    recording: str = ""


@dataclass(frozen=True)
class CaptionDataset:
    name: str
    split: str
    clips: tuple[Clip, ...]
    problems: dict[str, int] = field(default_factory=dict)  # what was dropped, counted

    def __len__(self) -> int:
        return len(self.clips)

    def captions(self) -> list[tuple[str, int]]:
        """Every (caption, clip index) pair, in clip order."""
        return [(c, i) for i, clip in enumerate(self.clips) for c in clip.captions]

    @property
    def labels(self) -> list[str | None]:
        return [clip.label for clip in self.clips]

    def summary(self) -> str:
        n_caps = sum(len(c.captions) for c in self.clips)
        text = f"{self.name} [{self.split}]: {len(self.clips)} clips, {n_caps} captions"
        if self.problems:
            text += "; dropped: " + ", ".join(f"{n} {what}" for what, n in self.problems.items())
        return text


def label_captions(label: str) -> tuple[str, ...]:
    words = label.replace("_", " ").replace("-", " ").strip()
    return tuple(t.format(label=words) for t in LABEL_TEMPLATES)


def _read_csv(path: Path) -> list[dict[str, str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            return list(csv.DictReader(f))
    except FileNotFoundError:
        raise DatasetError(f"'{path}' does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DatasetError(f"cannot read '{path}': {e}") from None


def _require(path: Path, rows: list[dict[str, str]], columns: Iterable[str]) -> None:
    have = set(rows[0]) if rows else set()
    missing = [c for c in columns if c not in have]
    if not rows:
        raise DatasetError(f"'{path}' has no rows")
    if missing:
        raise DatasetError(
            f"'{path}' lacks column(s) {', '.join(missing)} (has: {', '.join(sorted(have))})"
        )


def _assemble(
    name: str,
    split: str,
    root: Path,
    grouped: dict[str, list[str]],
    labels: dict[str, str],
    problems: Counter,
) -> CaptionDataset:
    clips = []
    for key, captions in grouped.items():
        path = root / key
        if not path.is_file():
            problems["missing audio files"] += 1
            continue
        kept = tuple(dict.fromkeys(c.strip() for c in captions if c and c.strip()))
        problems["empty captions"] += sum(1 for c in captions if not (c and c.strip()))
        if not kept:
            problems["clips without any caption"] += 1
            continue
        clips.append(Clip(key, path, kept, labels.get(key)))
    problems = Counter({k: v for k, v in problems.items() if v})
    if problems:
        warnings.warn(
            f"{name} [{split}]: " + ", ".join(f"{n} {w}" for w, n in problems.items()), stacklevel=3
        )
    if not clips:
        raise DatasetError(f"{name} [{split}] has no usable clips ({dict(problems) or 'empty'})")
    return CaptionDataset(name, split, tuple(clips), dict(problems))


def load_clotho(root: str | Path, split: str) -> CaptionDataset:
    """Clotho v2: `<root>/<split>/*.wav` + `<root>/clotho_captions_<split>.csv`."""
    root = Path(root)
    if split not in SPLITS:
        raise DatasetError(f"Clotho split must be one of {', '.join(SPLITS)}, not '{split}'")
    csv_path = root / f"clotho_captions_{split}.csv"
    rows = _read_csv(csv_path)
    _require(csv_path, rows, ["file_name", "caption_1"])
    caption_cols = sorted(c for c in rows[0] if c.startswith("caption_"))
    grouped: dict[str, list[str]] = {}
    problems: Counter = Counter()
    for row in rows:
        key = f"{split}/{row['file_name']}"
        if key in grouped:
            problems["duplicate file names"] += 1
        grouped.setdefault(key, []).extend(row[c] for c in caption_cols)
    return _assemble(f"clotho:{root}", split, root, grouped, {}, problems)


def load_long_csv(csv_path: str | Path, audio_dir: str | Path, split: str) -> CaptionDataset:
    """Clotho's long format, `fname,raw_text,text`, one caption per row."""
    csv_path = Path(csv_path)
    rows = _read_csv(csv_path)
    _require(csv_path, rows, ["fname", "raw_text"])
    grouped: dict[str, list[str]] = {}
    for row in rows:
        grouped.setdefault(row["fname"], []).append(row["raw_text"])
    return _assemble(f"captions:{csv_path.name}", split, Path(audio_dir), grouped, {}, Counter())


def parse_split_filter(spec: str) -> tuple[str, set[str]]:
    """'fold=1,2' → ('fold', {'1', '2'})."""
    column, sep, values = spec.partition("=")
    wanted = {v.strip() for v in values.split(",") if v.strip()}
    if not sep or not column.strip() or not wanted:
        raise DatasetError(f"split filter must look like COLUMN=VALUE[,VALUE...], not '{spec}'")
    return column.strip(), wanted


def load_labels_folder(root: str | Path, split: str = "all") -> CaptionDataset:
    """A folder with `labels.csv` (`file,caption` or `file,label`; several rows per file).

    `split` is `all`, a `COLUMN=V1,V2` filter on the CSV (e.g. `fold=3`), or a value of the
    CSV's `split` column (e.g. `test`).
    """
    root = Path(root)
    csv_path = root / "labels.csv"
    rows = _read_csv(csv_path)
    _require(csv_path, rows, ["file"])
    have = set(rows[0])
    if not {"caption", "label"} & have:
        raise DatasetError(f"'{csv_path}' needs a 'caption' or a 'label' column")
    if split != "all":
        column, values = parse_split_filter(split if "=" in split else f"split={split}")
        if column not in have:
            raise DatasetError(f"'{csv_path}' has no column '{column}' to select split '{split}'")
        # A short row leaves its last fields None: it matches no value.
        rows = [r for r in rows if (r[column] or "").strip() in values]
        if not rows:
            raise DatasetError(f"no rows of '{csv_path}' match split '{split}'")
    grouped: dict[str, list[str]] = {}
    labels: dict[str, str] = {}
    problems: Counter = Counter()
    for row in rows:
        key = row["file"].strip()
        captions = grouped.setdefault(key, [])
        if row.get("caption") is not None:
            captions.append(row["caption"])
        label = (row.get("label") or "").strip()
        if label:
            if key in labels and labels[key] != label:
                problems["files with conflicting labels"] += 1
            labels.setdefault(key, label)
            if "caption" not in row:
                captions.extend(label_captions(label))
        elif "caption" not in row:
            captions.append("")
    return _assemble(f"labels:{root.name}", split, root, grouped, labels, problems)


def load_dataset(
    spec: str | Path, split: str, audio_dir: str | Path | None = None
) -> CaptionDataset:
    """Pick the loader from what `spec` is: a Clotho folder, a labels folder or a long CSV."""
    path = Path(spec)
    if path.suffix == ".toml":
        from earshot.data.recipe import recipe_for

        return recipe_for(path).dataset(split)
    if path.is_file() and path.suffix == ".csv":
        if audio_dir is None:
            raise DatasetError(f"'{path}' holds captions only: pass the audio folder too")
        return load_long_csv(path, audio_dir, split)
    if not path.is_dir():
        raise DatasetError(f"dataset '{spec}' is neither a folder nor a captions CSV")
    if any(path.glob("clotho_captions_*.csv")):
        return load_clotho(path, split)
    if (path / "labels.csv").is_file():
        return load_labels_folder(path, split)
    raise DatasetError(
        f"'{path}' is not a dataset: expected clotho_captions_<split>.csv files (Clotho v2) "
        f"or a labels.csv"
    )
