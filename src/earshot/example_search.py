"""Search by example: a file, a span of one, decoded samples or an indexed window as the query
(`ExampleSearch`, a part of `earshot.search.Searcher`: it embeds the example with the
searcher's model and ranks through its `search_vector`, with the "example" calibration and the
example's own file left out); beside an example, the query syntax gives filters only."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from earshot.errors import SearchError
from earshot.filters import Filters
from earshot.fsutil import absolute
from earshot.hits import Results


class ExampleSearch:
    """`Searcher`'s search by example."""

    def example_filters(self, text: str | None, filters: Filters | None = None) -> Filters:
        """`filters` narrowed by the fields and operators of `text` (`dur:<5 ext:wav -rain`),
        for a search by example: the example is what is searched for, so a description
        beside it is refused (SearchError), not quietly dropped."""
        filters = filters or Filters()
        if text is None or not text.strip():
            return filters
        plan = self.plan_text(text, filters)
        if plan.text is not None:
            said = plan.parsed.text.strip()
            raise SearchError(
                f"a search by example takes filters only (dur:, ext:, tag:, folder:, sr:, ch:, "
                f"-word, \"phrase\"), not a description: '{said}' would be searched for "
                "beside the example; search by words, or by the example alone"
            )
        return plan.filters

    def search_like(
        self,
        path: str | Path,
        k: int = 10,
        start: float | None = None,
        end: float | None = None,
        filters: Filters | None = None,
        **page,
    ) -> Results:
        """Sounds like (a span of) an audio file; the file itself is left out of the results."""
        query = self.embed_example(path, start, end)
        resolved = absolute(path)
        own = self.cat.file_id_for_path(resolved)
        return self.search_vector(query, k, filters, exclude_file=own, kind="example", **page)

    def search_like_segment(
        self, segment_id: int, k: int = 10, filters: Filters | None = None, **page
    ) -> Results:
        rows = self.cat.segments([segment_id])
        if segment_id not in rows:
            raise SearchError(f"no segment with id {segment_id} in '{self.cat.path}'")
        query = self.cat.segment_vector(segment_id)
        return self.search_vector(
            query / np.linalg.norm(query),
            k,
            filters,
            exclude_file=rows[segment_id].file_id,
            kind="example",
            **page,
        )

    def embed_example(self, path: str | Path, start: float | None, end: float | None) -> np.ndarray:
        from earshot.audio.io import load

        samples = load(path, self.model.config.audio.sample_rate)
        return self.embed_samples(samples, start, end, f"'{path}'")

    def embed_samples(
        self,
        samples: np.ndarray,
        start: float | None = None,
        end: float | None = None,
        label: str = "the example",
    ) -> np.ndarray:
        """`embed_example` for a sound already decoded: mono (n,) at the model's sample rate.
        `label` names it in the error for a span without audio."""
        from earshot.audio.windows import windows

        audio = self.model.config.audio
        lo = 0 if start is None else max(0, round(start * audio.sample_rate))
        hi = len(samples) if end is None else min(len(samples), round(end * audio.sample_rate))
        if hi - lo < audio.n_fft:
            span = f"{lo / audio.sample_rate:g}-{hi / audio.sample_rate:g} s"
            raise SearchError(f"the example span {span} of {label} holds no audio to compare")
        ws = list(windows([samples[lo:hi]], audio.sample_rate, audio.window_s, audio.hop_s))
        vectors = self.model.encode_audio(np.stack([w.samples for w in ws])).numpy()
        mean = vectors.mean(axis=0)
        return mean / np.linalg.norm(mean)
