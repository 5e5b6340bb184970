"""EfficientAT's log-mel front end: how many rows to compute at a time.

`EfficientAtLogMel` computes its rows `chunk_rows` at a time (the numbers are the same for any
chunk size, `tests/test_efficientat.py`). A 10 s window's spectrogram is 4 MB of complex
numbers and its power 2 MB more, so a whole batch of 8 or 16 windows at once works out of main
memory, not the caches. This times, side by side in one process and in rotating rounds:

- `frontend`: the front end alone over `--windows` 10 s windows handed over in batches of
  `--batch` (what the indexer and `encode_audio` hand it), for each chunk size;
- `encode`: the same windows through `JointModel.encode_audio_tagged` (front end + mn04 + head +
  tags, batch `--batch`), chunked as shipped against the whole batch at once;

at each torch thread count in `--threads`. Prints one JSON object: median ms per window of each
variant and the median of its per-round ratios to the whole-batch one (`speedup`, > 1 faster).

    HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_frontend.py [--windows 32] [--rounds 5]

Needs the general model's backbone for `encode` (../shared/weights, the cache or
$EARSHOT_WEIGHTS_DIR); without it `encode` is reported skipped and the front end still runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np


def _time(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--windows", type=int, default=32)
    p.add_argument("--batch", type=int, default=8, help="rows handed to the front end at once")
    p.add_argument("--chunks", default="1,2,4", help="chunk sizes beside the whole batch")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    import torch

    from earshot.audio.efficientat_frontend import EfficientAtLogMel
    from earshot.model.pretrained import pretrained_config

    config = pretrained_config("mn04", "all-MiniLM-L6-v2", 384, 300, 10.0, 5.0)
    rng = np.random.default_rng(0)
    waves = torch.from_numpy(
        rng.standard_normal((args.windows, config.audio.window_samples)).astype(np.float32) * 0.1
    )
    frontend = EfficientAtLogMel(config.audio)
    shipped = EfficientAtLogMel.chunk_rows
    chunks = [int(c) for c in args.chunks.split(",")]
    model, skipped = None, None
    try:
        from earshot.model.dual import JointModel
        from earshot.model.pretrained import attach_backbone

        model = JointModel(config)
        attach_backbone(model, progress=False)
        model.eval()
    except Exception as e:  # no backbone here: time the front end only
        skipped = f"{type(e).__name__}: {e}"
        model = None

    def frontend_run(chunk: int):
        def run():
            frontend.chunk_rows = chunk
            with torch.no_grad():
                for i in range(0, len(waves), args.batch):
                    frontend(waves[i : i + args.batch])

        return run

    def encode_run(chunk: int):
        def run():
            model.frontend.chunk_rows = chunk
            model.encode_audio_tagged(waves, batch_size=args.batch)

        return run

    out: dict = {
        "windows": args.windows,
        "batch": args.batch,
        "shipped_chunk_rows": shipped,
        "load_start": os.getloadavg(),
    }
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        variants = {"frontend_whole": frontend_run(args.batch)}
        variants.update({f"frontend_chunk{c}": frontend_run(c) for c in chunks})
        if model is not None:
            variants["encode_whole"] = encode_run(args.batch)
            variants["encode_shipped"] = encode_run(shipped)
        for fn in variants.values():  # warm-up (the traced network is built on first use)
            fn()
        times: dict[str, list[float]] = {k: [] for k in variants}
        names = list(variants)
        for r in range(args.rounds):
            for name in names[r % len(names) :] + names[: r % len(names)]:
                times[name].append(_time(variants[name]) / args.windows)
            print(f"threads {threads}: round {r + 1}/{args.rounds}", file=sys.stderr)
        result = {}
        for name, ts in times.items():
            base = times["encode_whole" if name.startswith("encode") else "frontend_whole"]
            ratios = [b / t for b, t in zip(base, ts, strict=True)]
            result[name] = {
                "ms_per_window": round(1000 * statistics.median(ts), 2),
                "speedup": round(statistics.median(ratios), 3),
            }
        out[f"threads_{threads}"] = result
    frontend.chunk_rows = shipped
    if skipped:
        out["encode"] = {"skipped": skipped}
    out["load_end"] = os.getloadavg()
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
