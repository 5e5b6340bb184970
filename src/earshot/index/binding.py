"""Which model a catalogue holds the vectors of: its id, dimension and description, and the tag
vocabulary of a tagging model (`ModelBinding`, a part of `earshot.index.store.Catalogue`: it
reads and writes the catalogue's `meta` table through the catalogue's own transactions). An
unbound catalogue is bound by its first index; any other model is then refused, with the hint
that names the one that made it.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping, Sequence

from earshot.errors import CatalogueError, ModelMismatchError
from earshot.index.schema import model_hint
from earshot.index.tag_blobs import check_tag_names


class ModelBinding:
    """`Catalogue`'s model binding."""

    @property
    def model_id(self) -> str | None:
        return self._meta("model_id")

    @property
    def dim(self) -> int | None:
        return self._meta("dim")

    @property
    def model_info(self) -> dict:
        return json.loads(self._meta("model_info", "{}"))

    @property
    def tag_names(self) -> tuple[str, ...]:
        """The tag vocabulary of the model that indexed the catalogue; () if it has no tags."""
        if self._tag_names:
            return self._tag_names
        names = self._meta("tag_names")
        names = tuple(json.loads(names)) if names else ()
        if not self._in_batch:  # a batch that set them may still roll back
            self._tag_names = names
        return names

    def bind_model(
        self,
        model_id: str,
        dim: int,
        model_info: Mapping | None = None,
        tag_names: Sequence[str] = (),
    ) -> None:
        """Bind an unbound catalogue to `model_id` (and its tag vocabulary, if it tags windows);
        refuse any other model than the bound one.

        Inside a batch the binding commits with it; outside, in a transaction of its own.
        """
        if not model_id or int(dim) <= 0:
            raise CatalogueError(f"a model needs an id and a positive dim, got {model_id!r}, {dim}")
        try:
            names = check_tag_names(tag_names)
        except ValueError as exc:
            raise CatalogueError(f"cannot bind model {model_id}: {exc}") from exc
        with self._lock:
            if self._check_binding(model_id, int(dim)) and self._check_tags(names):
                return
            with contextlib.nullcontext() if self._in_batch else self.batch():
                # Looked at again under the write lock: another process may have bound it.
                bound = self._check_binding(model_id, int(dim))
                with self._use(f"bind model {model_id}", write=True) as conn:
                    if not bound:
                        info = json.dumps(dict(model_info or {}), sort_keys=True, default=str)
                        self._set_meta(
                            conn, {"model_id": model_id, "dim": int(dim), "model_info": info}
                        )
                    if not self._check_tags(names):
                        # Files indexed before (by an earshot that kept no tags) stay untagged.
                        self._set_meta(conn, {"tag_names": json.dumps(names, ensure_ascii=False)})

    def _check_tags(self, names: tuple[str, ...]) -> bool:
        """True if the catalogue has `names` (or nothing needs binding); False if it has no
        vocabulary yet; raises for another one."""
        if not names:
            return True
        bound = self.tag_names
        if not bound:
            return False
        if bound != names:
            raise ModelMismatchError(
                f"catalogue '{self.path}' holds tags of a {len(bound)}-name vocabulary; this "
                f"model tags with another ({len(names)} names); use another --db"
            )
        return True

    def _check_binding(self, model_id: str, dim: int) -> bool:
        """True if bound to this model, False if unbound; raises for any other binding."""
        bound, bound_dim = self.model_id, self.dim
        if bound is None:
            return False
        if bound != model_id:
            raise ModelMismatchError(
                f"catalogue '{self.path}' holds vectors of model {bound}; this is model "
                f"{model_id}; use another --db, or index with the model that made it "
                f"({model_hint(bound, self.model_info)})"
            )
        if bound_dim != dim:
            raise CatalogueError(
                f"catalogue '{self.path}' holds {bound_dim}-d vectors of model {bound}, "
                f"but the model now says {dim}-d; use another --db"
            )
        return True
