"""Peak memory and speed of embedding one long recording, streamed window by window.

Writes a long 48 kHz stereo 16-bit WAV (default 2 hours, 1.4 GB on disk) to a temporary folder,
then, each in a fresh child process so each has its own peak RSS:
  - `baseline`: import earshot + torch, build the model, embed one 10 s window;
  - `streamed`: `earshot.embed.embed_file` over the whole file;
  - `whole_file_decode` (reference): `soundfile.read` of the whole file, what streaming avoids.
The CNN is the tiny test model by default (`--encoder tiny`), so the figure is the pipeline's
memory, not the CNN's; `--encoder cnn10|cnn14` runs a real-size one (slow for 2 hours).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, path: str, encoder: str) -> dict:
    import torch

    torch.set_num_threads(2)
    from earshot.config import ModelConfig
    from earshot.embed import embed_file
    from earshot.encoders.audio import STANDARD_ENCODERS
    from earshot.model.io import build_model
    from earshot.testing.models import tiny_model

    if encoder == "tiny":
        model = tiny_model()
    else:
        model = build_model(ModelConfig(encoder=STANDARD_ENCODERS[encoder]))
    start = time.perf_counter()
    if mode == "baseline":
        model.encode_audio(torch.zeros(1, model.config.audio.window_samples))
        return {"peak_rss_mb": round(peak_rss_mb(), 1)}
    if mode == "whole_file_decode":
        import soundfile as sf

        data, _ = sf.read(path, dtype="float32")
        return {"peak_rss_mb": round(peak_rss_mb(), 1), "decoded_mb": round(data.nbytes / 2**20)}
    windows = embed_file(model, path, batch_size=8)
    seconds = time.perf_counter() - start
    return {
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "windows": len(windows),
        "seconds": round(seconds, 1),
        "audio_x_realtime": round(windows[-1].end_s / seconds, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--hours", type=float, default=2.0)
    ap.add_argument("--encoder", default="tiny", choices=["tiny", "cnn10", "cnn14"])
    ap.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.encoder)))
        return

    from earshot.testing.audio import write_noise

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "long.wav"
        print(f"writing {args.hours} h of 48 kHz stereo WAV ...", file=sys.stderr)
        write_noise(path, args.hours * 3600, 48000, channels=2, subtype="PCM_16")
        result = {
            "file": {
                "hours": args.hours,
                "sample_rate": 48000,
                "channels": 2,
                "size_mb": round(path.stat().st_size / 2**20),
            },
            "encoder": args.encoder,
        }
        for mode in ("baseline", "streamed", "whole_file_decode"):
            print(f"running {mode} ...", file=sys.stderr)
            out = subprocess.run(
                [sys.executable, __file__, "--encoder", args.encoder, "--child", mode, str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            result[mode] = json.loads(out.stdout)
        result["streamed_extra_rss_mb"] = round(
            result["streamed"]["peak_rss_mb"] - result["baseline"]["peak_rss_mb"], 1
        )
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
