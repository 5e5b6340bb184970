"""`earshot serve` under load: requests/s, latency, errors and server memory, on loopback.

Prints one JSON object on stdout (progress on stderr). It builds a catalogue of `--segments`
synthetic windows (default 100k: 10k files × 10 windows of `clustered_unit_vectors`) bound to a
model whose audio side is tiny (not used by text search) and whose text side is the real default
encoder (all-MiniLM-L6-v2 + a 384 → 300 head), starts `earshot serve` on it in a subprocess,
and drives it with a bounded load generator: threads, one keep-alive `http.client` connection
each, every request timed.

Phases (each bounded by time and by a request budget):
  - `search_8_clients`: `--clients` (8) clients sending `GET /api/search?q=...&k=10`, for
    `--seconds` (60). Queries are Clotho evaluation captions, each used once until all are
    used (`queries_source` says so; a fixed synthetic list where the captions are absent).
  - `search_1_client`: one client, `--short-seconds` (15): the latency of one request alone.
  - `similar_8_clients`: `GET /api/similar/{id}?segment=...` (no text encoder), `--short-seconds`.
Each reports requests, requests/s, p50/p90/p99/max latency in ms and errors (non-200 answers
or failed connections). The server's RSS is sampled every second during the main phase:
start, middle, end, max.

`in_process` times `Searcher.search_text` on the same queries in this process, one at a time,
with the server's torch thread count for text queries (`earshot.serve.service.TEXT_THREADS`), and
gives the ratios of the server's p50 (1 client and 8 clients) to it: the figures move with
machine load, the ratios much less. With one search at a time on the server (see
`earshot.serve.app`), 8 clients queue: their p50 is about 8 × one request's service time.

The load generator shares the machine with the server: on 2 cores, part of what is measured is
the client's own CPU. `env.load_avg_1m_*` says how busy the machine was.
A default run takes about 2.5 minutes; `--quick` (a tiny text encoder, 5k windows, 1-2 s
phases) about 15 s.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import numpy as np

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAPTIONS = SHARED / "clotho-captions" / "evaluation.csv"
TARGET_P50_MS = 30.0


def log(message: str) -> None:
    print(f"bench_serve: {message}", file=sys.stderr, flush=True)


def load_avg() -> float:
    return round(os.getloadavg()[0], 2)


def queries(n_max: int) -> tuple[list[str], str]:
    if CAPTIONS.is_file():
        with CAPTIONS.open(newline="") as f:
            texts = [row["raw_text"].strip() for row in csv.DictReader(f)]
        texts = list(dict.fromkeys(t for t in texts if t))[:n_max]
        return texts, f"{CAPTIONS} ({len(texts)} distinct captions)"
    things = ["a dog", "rain", "a car", "birds", "a door", "people", "water", "wind", "a bell"]
    verbs = ["barks", "falls", "passes by", "sing", "creaks", "talk", "runs", "blows", "rings"]
    places = ["outside", "in a room", "far away", "close by", "at night", "in a street"]
    texts = [f"{t} {v} {p}" for t, v, p in itertools.product(things, verbs, places)][:n_max]
    return texts, f"synthetic ({len(texts)} sentences; {CAPTIONS} not found)"


# --- the catalogue ---------------------------------------------------------------------------


def build_catalogue(workdir: Path, n_segments: int, quick: bool) -> tuple[Path, Path, dict]:
    """A model folder and a catalogue of `n_segments` synthetic windows bound to it."""
    from earshot.index.decoding import read_record
    from earshot.index.scan import ScanEntry
    from earshot.index.store import Catalogue
    from earshot.model.io import model_id, save_model
    from earshot.testing.audio import write_tone
    from earshot.testing.models import tiny_model, write_tiny_text_model
    from earshot.testing.vectors import clustered_unit_vectors, put_synthetic_files

    if quick:
        text_dir = write_tiny_text_model(workdir / "text")
        model = tiny_model(joint_dim=300, text_model=str(text_dir), text_dim=16)
    else:
        model = tiny_model(joint_dim=300)  # the text side is MiniLM: real cost per query
    model_dir = save_model(model, workdir / "model")
    per_file = 10  # windows per file: a 55 s recording at 10 s / 5 s hop
    template = write_tone(workdir / "t.wav", 0.05, 8000)
    st = template.stat()
    record = read_record(ScanEntry(str(template), st.st_size, st.st_mtime_ns), "h")
    vectors = clustered_unit_vectors(n_segments, seed=0).astype(np.float32)
    db = workdir / "c.sqlite"
    t = time.perf_counter()
    with Catalogue(db) as cat:
        cat.bind_model(model_id(model), 300, {"path": str(model_dir)})
        put_synthetic_files(
            cat,
            record,
            vectors,
            per_file,
            lambda n: f"/library/{'a' if n % 10 else 'b'}/f{n:06d}.wav",
        )
    fill_s = time.perf_counter() - t
    info = {"segments": n_segments, "files": -(-n_segments // per_file), "fill_s": round(fill_s, 1)}
    return db, model_dir, info


# --- the server ------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        return None
    return None


def start_server(db: Path, model_dir: Path, port: int) -> tuple[subprocess.Popen, float]:
    cmd = [sys.executable, "-m", "earshot.cli", "serve", "--db", str(db), "--model"]
    cmd += [str(model_dir), "--port", str(port)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t = time.perf_counter()
    log_path = db.with_name("server.log")
    with log_path.open("wb") as server_log:  # a file, not a pipe: a full pipe would block it
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=server_log)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited: {log_path.read_text()[-2000:]}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/api/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc, time.perf_counter() - t
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not answer /api/health within 120 s")


# --- the load --------------------------------------------------------------------------------


def run_load(port: int, urls, clients: int, seconds: float, max_requests: int, sample=None):
    """`clients` threads, each with one keep-alive connection, taking URLs from `urls` (a
    thread-safe iterator) until `seconds` pass or `max_requests` were sent."""
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []
    sent = itertools.count()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        while time.perf_counter() < deadline and next(sent) < max_requests:
            with lock:
                url = next(urls)
            t0 = time.perf_counter()
            try:
                conn.request("GET", url)
                resp = conn.getresponse()
                body = resp.read()
                ms = (time.perf_counter() - t0) * 1000
                if resp.status != 200 or not body.startswith(b'{"query"'):
                    with lock:
                        errors.append(f"{resp.status}: {body[:200]!r}")
                else:
                    mine.append(ms)
            except (OSError, http.client.HTTPException) as e:
                with lock:
                    errors.append(f"{type(e).__name__}: {e}")
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    if sample is not None:
        sample(deadline)
    for th in threads:
        th.join()
    wall = time.perf_counter() - t
    return summarise(latencies, errors, wall, clients)


def summarise(latencies: list[float], errors: list[str], wall: float, clients: int) -> dict:
    ms = np.array(latencies) if latencies else np.array([np.nan])
    done = len(latencies) + len(errors)
    return {
        "clients": clients,
        "seconds": round(wall, 1),
        "requests": done,
        "requests_per_s": round(done / wall, 1),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p90_ms": round(float(np.percentile(ms, 90)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "max_ms": round(float(ms.max()), 2),
        "errors": len(errors),
        "error_examples": errors[:3],
    }


# --- in process ------------------------------------------------------------------------------


def in_process(db: Path, model_dir: Path, texts: list[str]) -> dict:
    from earshot.index.store import Catalogue
    from earshot.model.io import load_model
    from earshot.search import Searcher
    from earshot.serve.service import TEXT_THREADS, torch_threads

    model = load_model(model_dir)
    with Catalogue(db, readonly=True) as cat, torch_threads(TEXT_THREADS):  # as the server
        searcher = Searcher(cat, model)
        for text in texts[:20]:  # warm-up, as the server had
            searcher.search_text(text, 10)
        ms = []
        for text in texts:
            t0 = time.perf_counter()
            searcher.search_text(text, 10)
            ms.append((time.perf_counter() - t0) * 1000)
    return {
        "torch_threads": TEXT_THREADS,
        "queries": len(ms),
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--segments", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=60.0, help="main phase (default 60)")
    ap.add_argument("--short-seconds", type=float, default=15.0, help="other phases (15)")
    ap.add_argument("--max-requests", type=int, default=200_000, help="per phase")
    ap.add_argument("--in-process-queries", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="tiny text encoder, 5k windows, 2 s")
    ap.add_argument("--out", help="also write the JSON here")
    args = ap.parse_args()
    if args.quick:
        args.segments, args.seconds, args.short_seconds = 5_000, 2.0, 1.0
        args.in_process_queries = 30

    import torch

    texts, source = queries(50_000)
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "quick": args.quick,
        "load_avg_1m_start": load_avg(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    result: dict = {"env": env, "queries_source": source}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        log(f"building a catalogue of {args.segments} windows")
        db, model_dir, result["catalogue"] = build_catalogue(workdir, args.segments, args.quick)
        port = free_port()
        proc, startup_s = start_server(db, model_dir, port)
        try:
            result["server"] = {"startup_s": round(startup_s, 2)}
            log(f"server up in {startup_s:.1f} s (pid {proc.pid}); warming up")
            query_urls = (
                "/api/search?" + urlencode({"q": t, "k": 10}) for t in itertools.cycle(texts)
            )
            warm = run_load(port, query_urls, 2, 30.0, 40)
            if warm["errors"]:
                raise RuntimeError(f"warm-up failed: {warm['error_examples']}")
            rss: dict = {}
            samples: list[float] = []

            def sample(deadline: float) -> None:
                half = time.perf_counter() + (deadline - time.perf_counter()) / 2
                rss["start"] = rss_mb(proc.pid)
                while time.perf_counter() < deadline:
                    time.sleep(min(1.0, max(0.0, deadline - time.perf_counter())))
                    value = rss_mb(proc.pid)
                    if value is not None:
                        samples.append(value)
                    if "middle" not in rss and time.perf_counter() >= half:
                        rss["middle"] = value
                rss["end"] = rss_mb(proc.pid)

            log(f"search: {args.clients} clients for {args.seconds:g} s")
            phases = {}
            phases[f"search_{args.clients}_clients"] = run_load(
                port, query_urls, args.clients, args.seconds, args.max_requests, sample
            )
            rss["max"] = max(samples) if samples else None
            result["server"]["rss_mb"] = rss
            env["load_avg_1m_after_main"] = load_avg()
            log(f"search: 1 client for {args.short_seconds:g} s")
            phases["search_1_client"] = run_load(
                port, query_urls, 1, args.short_seconds, args.max_requests
            )
            ids = [int(i) for i in np.linspace(1, args.segments, 997).round()]
            similar_urls = (
                f"/api/similar/{-(-s // 10)}?segment={s}&k=10" for s in itertools.cycle(ids)
            )
            log(f"similar: {args.clients} clients for {args.short_seconds:g} s")
            phases[f"similar_{args.clients}_clients"] = run_load(
                port, similar_urls, args.clients, args.short_seconds, args.max_requests
            )
            result["phases"] = phases
            result["server"]["rss_mb_after_all"] = rss_mb(proc.pid)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        log(f"in-process Searcher.search_text on {args.in_process_queries} of the same queries")
        ip = in_process(db, model_dir, texts[: args.in_process_queries])
    main_phase = phases[f"search_{args.clients}_clients"]
    one = phases["search_1_client"]
    result["in_process"] = {
        "search_text": ip,
        "server_1_client_p50_over_in_process_p50": round(one["p50_ms"] / ip["p50_ms"], 2),
        f"server_{args.clients}_clients_p50_over_in_process_p50": round(
            main_phase["p50_ms"] / ip["p50_ms"], 2
        ),
    }
    result["target"] = {
        "p50_ms": TARGET_P50_MS,
        "clients": 8,
        "segments": 100_000,
        "measured_p50_ms": main_phase["p50_ms"],
        "met": bool(
            args.clients == 8
            and args.segments >= 100_000
            and main_phase["p50_ms"] <= TARGET_P50_MS
            and main_phase["errors"] == 0
        ),
    }
    env["load_avg_1m_end"] = load_avg()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
