"""For tests and benchmarks of `earshot serve`: a small indexed library, a server in a thread.

`build_library` writes synthetic recordings in two folders, a tiny model around a given text
encoder folder, and indexes them; `ServerThread` runs uvicorn on a free loopback port in a
background thread for as long as a `with` block lasts, configured as `earshot serve` runs it.
"""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Library:
    root: Path  # the recordings: root/birds, root/street
    db: Path  # the catalogue
    model_dir: Path  # the model that indexed it


def build_library(base: str | Path, text_model_dir: str | Path) -> Library:
    """Six recordings (2-30 s; WAV, FLAC, Ogg) under `base`/library, indexed into `base`/c.sqlite.

    The long ones change halfway (tone, then noise), so their windows differ and a query's
    best window is not always the first.
    """
    import numpy as np
    import soundfile as sf

    from earshot.model.io import save_model
    from earshot.testing.audio import tone, write_noise, write_tone
    from earshot.testing.models import tiny_model

    base = Path(base)
    root = base / "library"
    (root / "birds").mkdir(parents=True, exist_ok=True)
    (root / "street").mkdir(parents=True, exist_ok=True)
    write_tone(root / "birds" / "robin_song.wav", 3.0, 22050, freq=3000.0)
    write_tone(root / "birds" / "owl.flac", 2.0, 44100, channels=2, freq=400.0, seed=1)
    write_noise(root / "street" / "traffic.ogg", 4.0, 32000, seed=2)
    for name, seconds, freq, seed in (("long_hum.wav", 23, 120.0, 3), ("market.wav", 30, 900.0, 4)):
        rng = np.random.default_rng(seed)
        x = tone(seconds, 16000, freq=freq, seed=seed)[:, 0]
        half = len(x) // 2
        x[half:] = np.clip(0.3 * rng.standard_normal(len(x) - half), -1, 1)
        sf.write(root / "street" / name, x, 16000, subtype="PCM_16")
    write_tone(root / "birds" / "wren.wav", 12.0, 22050, freq=2500.0, seed=5)
    model_dir = base / "model"
    save_model(tiny_model(text_model=str(text_model_dir), text_dim=16), model_dir)
    db = base / "c.sqlite"
    index_folder(root, model_dir, db)
    return Library(root, db, model_dir)


def index_folder(root: str | Path, model_dir: str | Path, db: str | Path):
    """Index everything under `root` into the catalogue `db` with the model at `model_dir`, as
    `earshot index` does on 2 cores (decoding in this process, no progress bar); the loaded
    model is returned."""
    from earshot.index.build import Indexer
    from earshot.index.store import Catalogue
    from earshot.model.io import load_model

    model = load_model(model_dir)
    with Catalogue(db) as cat:
        Indexer(cat, model, workers=0, progress=False).run([str(root)])
    return model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerThread:
    """`with ServerThread(app) as server:` uvicorn serving `app` at `server.url` meanwhile."""

    def __init__(self, app, host: str = "127.0.0.1", port: int | None = None, **options):
        """`options` go to `earshot.serve.server.server_config` (e.g. head_timeout_s)."""
        import uvicorn

        from earshot.serve.server import server_config

        self.port = port or free_port()
        self.url = f"http://{host}:{self.port}"
        config = server_config(app, host, self.port, lifespan="off", **options)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the test server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
