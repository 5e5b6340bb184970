"""Per-window tags (schema v2) as the catalogue stores them: a window's AudioSet-style tag
probabilities become a compact blob of its likeliest tags, a file's blob summarises its
windows', and the names the model is sure of go to its keyword-search row.

`schema.py` holds the tables these blobs live in; `store.py` writes them; the queries that
filter by tag (`filter_queries.py`) read them with `decode_tags`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# A window's tags: its MAX_TAGS most probable tags with probability >= TAG_FLOOR, best first,
# each 3 bytes: the tag's index in the vocabulary (uint16 LE) and round(p * 255) (uint8). At
# most 24 bytes against the 600 of a 300-d float16 vector. An empty blob: tagged, nothing sure.
TAG_DTYPE = np.dtype([("tag", "<u2"), ("q", "u1")])
MAX_TAGS = 8
TAG_FLOOR = 0.05
# A file "has" a tag when one of its windows reaches this: the default of `--tag-min`, and the
# bar for the tag names its keyword-search row holds.
CONFIDENT_TAG = 0.3
# At most this many of them (the likeliest) in a file's keyword-search row, and at most
# KEYWORD_TAGS_PER_WINDOW for each of its windows: a one-window clip's row names its 3 likeliest
# confident tags, a file of 6 windows or more up to 16. The names' text is stored twice (FTS5's
# copy and its index), ~21 B a name: up to 16 names made one-window clips +16 % larger (issue
# #15, `bench/bench_catalogue_size.py`). Every tag stays in the blobs, for `--tag` filters
# and display.
KEYWORD_TAGS = 16
KEYWORD_TAGS_PER_WINDOW = 3
MAX_VOCABULARY = 65535


def encode_tags(probs, n_tags: int) -> bytes:
    """One window's (n_tags,) probabilities → its tag blob (see TAG_DTYPE); ValueError if bad."""
    try:
        p = np.asarray(probs, dtype=np.float32).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"tag probabilities are not numbers: {exc}") from exc
    if p.shape[0] != n_tags:
        raise ValueError(f"a window has {p.shape[0]} tag probabilities, not {n_tags}")
    if not np.isfinite(p).all() or p.min(initial=0.0) < -1e-4 or p.max(initial=0.0) > 1 + 1e-4:
        raise ValueError("tag probabilities must be finite and within [0, 1]")
    order = np.argsort(-p, kind="stable")[:MAX_TAGS]
    order = order[p[order] >= TAG_FLOOR]
    out = np.empty(len(order), dtype=TAG_DTYPE)
    out["tag"] = order
    out["q"] = np.rint(np.clip(p[order], 0.0, 1.0) * 255)
    return out.tobytes()


def decode_tags(blob: bytes | None) -> np.ndarray:
    """A tag blob → (n,) TAG_DTYPE entries, best first; none for NULL or empty."""
    if not blob:
        return np.empty(0, dtype=TAG_DTYPE)
    if len(blob) % TAG_DTYPE.itemsize:
        raise ValueError(f"a tag blob of {len(blob)} bytes is not whole 3-byte entries")
    return np.frombuffer(blob, dtype=TAG_DTYPE)


def summarise_tags(blobs: Sequence[bytes | None]) -> bytes | None:
    """A file's tag summary from its windows' blobs: every tag any window holds, with its best
    quantised probability, best first (ties by index); None when the windows have no tags."""
    if not blobs or any(b is None for b in blobs):
        return None
    entries = np.concatenate([decode_tags(b) for b in blobs])
    if len(entries) == 0:
        return b""
    tag, q = entries["tag"].astype(np.int64), entries["q"].astype(np.int64)
    order = np.lexsort((-q, tag))  # by tag, its best first
    tag, q = tag[order], q[order]
    first = np.r_[True, tag[1:] != tag[:-1]]
    tag, q = tag[first], q[first]
    ranked = np.lexsort((tag, -q))
    out = np.empty(len(ranked), dtype=TAG_DTYPE)
    out["tag"], out["q"] = tag[ranked], q[ranked]
    return out.tobytes()


def keyword_tag_limit(windows: int) -> int:
    """How many tag names the keyword-search row of a file of `windows` windows holds at most."""
    return min(KEYWORD_TAGS, KEYWORD_TAGS_PER_WINDOW * int(windows))


def confident_tags(
    summary: bytes | None, names: Sequence[str], limit: int = KEYWORD_TAGS
) -> list[str]:
    """The names of a file's likeliest tags that reach CONFIDENT_TAG (at most `limit`, best
    first): what keyword search sees (`limit`: `keyword_tag_limit` of the file's windows)."""
    entries = decode_tags(summary)
    return [names[t] for t, q in zip(entries["tag"], entries["q"], strict=True)
            if q / 255 >= CONFIDENT_TAG - 1e-9 and t < len(names)][:limit]  # fmt: skip


def check_tag_names(names: Sequence[str]) -> tuple[str, ...]:
    """A model's tag vocabulary as the catalogue stores it; ValueError if it cannot be one."""
    out = tuple(names)
    if len(out) > MAX_VOCABULARY:
        raise ValueError(f"{len(out)} tag names; a catalogue holds at most {MAX_VOCABULARY}")
    if not all(isinstance(n, str) and n.strip() for n in out):
        raise ValueError("tag names must be non-empty strings")
    return out
