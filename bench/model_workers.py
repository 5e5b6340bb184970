"""What bench_model.py times: the frontend (decode + resample + log-mel) and the audio encoders.

Each variant is one object with `warmup`, `run` and `finish` (harness.Timed), built in its own
worker process by `setup`.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

from harness import Timed, peak_rss_mb, torch_env

CLIP_S = 10.0

# name → (suffix, sample rate, channels, subtype): the shapes recordings arrive in.
FORMATS = {
    "wav_44k_stereo_pcm16": (".wav", 44100, 2, "PCM_16"),
    "ogg_vorbis_22k_mono": (".ogg", 22050, 1, "VORBIS"),  # like ../shared/data's clips
    "flac_48k_stereo_pcm24": (".flac", 48000, 2, "PCM_24"),
}


@dataclass(frozen=True)
class ModelVariant:
    encoder: str  # a STANDARD_ENCODERS name
    precision: str  # encode_audio's: "fp32" or "bf16" (bf16 autocast + channels_last)
    compiled: bool = False
    baseline: str | None = None  # the fp32 variant its speed and embeddings are held to
    target: bool = False  # held to bench_model.FAST_TARGET


MODEL_VARIANTS = {
    "cnn14_fp32": ModelVariant("cnn14", "fp32"),
    "cnn14_fast": ModelVariant("cnn14", "bf16", baseline="cnn14_fp32", target=True),
    "cnn10_fp32": ModelVariant("cnn10", "fp32"),
    "cnn10_bf16": ModelVariant("cnn10", "bf16", baseline="cnn10_fp32"),
    # Not in earshot: torch.compile (inductor, frozen weights) around encode_audio's bf16 path.
    "cnn14_compile": ModelVariant(
        "cnn14", "bf16", compiled=True, baseline="cnn14_fp32", target=True
    ),
}
# Decoding and resampling run in one thread; this one decodes a batch's files on `--threads`
# threads (soundfile and soxr release the GIL) to see what the second core is worth.
FRONTEND_VARIANTS = ("frontend", "frontend_threaded")
VARIANTS = (*FRONTEND_VARIANTS, *MODEL_VARIANTS)


def setup(args: argparse.Namespace) -> tuple[Timed, dict]:
    """Variant `args.only`, on `args.threads` torch threads; facts for the parent's report."""
    import torch

    torch.set_num_threads(args.threads)
    env = torch_env()
    rss_after_import = peak_rss_mb()
    if args.only in FRONTEND_VARIANTS:
        worker = FrontendWorker(args, threaded=args.only == "frontend_threaded")
    else:
        worker = ModelWorker(args, args.only, MODEL_VARIANTS[args.only])
    return worker, {"env": env, "rss_after_import_mb": round(rss_after_import, 1)}


class FrontendWorker:
    """Decode + resample to 32 kHz + log-mel, from files on disk, `batch_size` clips at a time.

    The files were just written, so they are read from the page cache: this measures the CPU
    work, not the disk.
    """

    def __init__(self, args: argparse.Namespace, threaded: bool = False):
        from concurrent.futures import ThreadPoolExecutor

        from earshot.audio.features import LogMel
        from earshot.config import AudioConfig
        from earshot.testing.audio import write_tone

        self.config = AudioConfig()
        self.logmel = LogMel(self.config).eval()
        self.batch_size = args.batch_size
        self.pool = ThreadPoolExecutor(args.threads) if threaded else None
        root = Path(args.workdir) / ("frontend_threaded" if threaded else "frontend")
        root.mkdir()
        self.files: dict[str, list[Path]] = {name: [] for name in FORMATS}
        for i in range(args.clips):
            name = list(FORMATS)[i % len(FORMATS)]
            suffix, rate, channels, subtype = FORMATS[name]
            path = root / f"clip{i:03d}{suffix}"
            write_tone(path, CLIP_S, rate, channels, 110.0 * (1 + i % 12), subtype, seed=i)
            self.files[name].append(path)
        self.files = {name: paths for name, paths in self.files.items() if paths}

    def _batch(self, paths: list[Path]):
        import numpy as np
        import torch

        from earshot.audio.io import load

        n = self.config.window_samples
        x = np.zeros((len(paths), n), dtype=np.float32)  # (batch, samples), zero-padded

        def decode(row: np.ndarray, path: Path) -> None:
            samples = load(path, self.config.sample_rate)[:n]
            row[: len(samples)] = samples

        if self.pool is None:
            for row, path in zip(x, paths, strict=True):
                decode(row, path)
        else:
            list(self.pool.map(decode, x, paths))
        with torch.inference_mode():
            return self.logmel(torch.from_numpy(x))  # (batch, 1, frames, n_mels)

    def warmup(self) -> None:
        for paths in self.files.values():
            self._batch(paths[: self.batch_size])

    def run(self) -> dict:
        formats = {}
        for name, paths in self.files.items():
            t = time.perf_counter()
            for i in range(0, len(paths), self.batch_size):
                self._batch(paths[i : i + self.batch_size])
            formats[name] = {"seconds": time.perf_counter() - t, "clips": len(paths)}
        return {
            "seconds": sum(f["seconds"] for f in formats.values()),
            "clips": sum(f["clips"] for f in formats.values()),
            "formats": formats,
        }

    def finish(self) -> dict:
        return {"info": {"clips": sum(len(p) for p in self.files.values())}}


class ModelWorker:
    """JointModel.encode_audio on 10 s waveforms at 32 kHz (log-mel included), random weights."""

    def __init__(self, args: argparse.Namespace, name: str, variant: ModelVariant):
        import torch

        from earshot.config import ModelConfig
        from earshot.encoders.audio import STANDARD_ENCODERS
        from earshot.model.io import build_model
        from earshot.testing.models import tiny_model

        self.name, self.variant, self.workdir = name, variant, Path(args.workdir)
        if args.quick:
            self.model = tiny_model(variant.encoder, seed=0)
        else:
            self.model = build_model(ModelConfig(encoder=STANDARD_ENCODERS[variant.encoder]), 0)
        self.params = sum(p.numel() for p in self.model.audio_encoder.parameters())
        if variant.compiled:
            import torch._inductor.config as inductor_config

            # Freezing folds BatchNorm into the convolutions and pre-packs their weights for
            # oneDNN: most of what compiling can win for a CNN on CPU.
            inductor_config.freezing = True
            self.model.audio_encoder = torch.compile(self.model.audio_encoder, dynamic=False)
        self.batch_size = args.batch_size
        self.waveforms = torch.from_numpy(_waveforms(args.model_clips, self.model.config))
        self.embeddings = None

    def _encode(self, waveforms):
        return self.model.encode_audio(waveforms, self.batch_size, self.variant.precision)

    def warmup(self) -> None:
        # One call per batch shape: the first call of a shape plans oneDNN kernels (or compiles).
        self._encode(self.waveforms[: self.batch_size])
        if rest := len(self.waveforms) % self.batch_size:
            self._encode(self.waveforms[:rest])

    def run(self) -> dict:
        t = time.perf_counter()
        self.embeddings = self._encode(self.waveforms)  # (clips, joint_dim)
        return {"seconds": time.perf_counter() - t, "clips": len(self.waveforms)}

    def finish(self) -> dict:
        import numpy as np

        path = self.workdir / f"{self.name}.npy"
        np.save(path, self.embeddings.numpy())
        config = self.model.config
        info = {
            "clips": len(self.waveforms),
            "encoder": config.encoder.name,
            "widths": list(config.encoder.widths),
            "params": self.params,
            "precision": self.variant.precision,
            "channels_last": self.variant.precision == "bf16",
            "compiled": self.variant.compiled,
            "random_weights": True,
        }
        return {"embeddings": str(path), "info": info}


def _waveforms(n: int, config):
    """`n` seeded 10 s clips, (n, samples) float32: tones of many pitches in varied noise."""
    import numpy as np

    from earshot.testing.audio import tone

    rate = config.audio.sample_rate
    clips = [
        tone(CLIP_S, rate, freq=110.0 * (1 + i % 12), seed=i, noise=0.01 + 0.05 * (i % 5))[:, 0]
        for i in range(n)
    ]
    return np.stack(clips).astype(np.float32)
