"""For tests, benchmarks and the README's walk-through of `earshot[ray]`: a real Ray cluster of
several nodes on loopback, and a real S3 API (moto's server) on loopback, each started as
their own command-line programs (`ray start`, `moto_server`) in a process group of their own and
stopped by that group, so nothing outlives the `with` block and no other Ray on the machine is
touched (`ray stop` would stop every Ray of the user).

Every port is a free one picked at start, every node has its own temporary folder, and the
cluster uses token authentication (`RAY_AUTH_MODE=token`): `RayCluster.env` is what a driver or
an `earshot` subprocess needs to join it.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

LOOPBACK = "127.0.0.1"


_GIVEN: set[int] = set()


def free_port() -> int:
    """A loopback port free now and not handed out before in this process. The OS may give
    a just-released port straight back, and Ray refuses two of its components on one port (CI
    saw the head's GCS port handed out again as its runtime-env agent's), so every port given
    is remembered."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port
    raise RuntimeError("no free loopback port that was not handed out already")


def _wait_port(port: int, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with status {proc.returncode} before it listened")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), 0.5):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout:g} s")


def _stop_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the process group `proc` leads, then SIGKILL whatever is left of it."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(grace_s)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)


def _bin(name: str) -> str:
    here = Path(sys.executable).parent / name
    found = here if here.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"'{name}' is not installed: pip install 'earshot[ray]'")
    return str(found)


class RayCluster:
    """`nodes` Ray nodes on loopback (the first the head), `cpus` CPUs each, a small object
    store each. A context manager: started on enter, every process stopped on exit."""

    def __init__(
        self,
        nodes: int = 2,
        cpus: int = 1,
        object_store_mb: int = 80,
        token: bool = True,
        env: dict | None = None,
    ):
        self.n_nodes, self.cpus, self.object_store_mb = nodes, cpus, object_store_mb
        self.base = Path(tempfile.mkdtemp(prefix="earshot-ray-"))
        self.port = free_port()
        self.address = f"{LOOPBACK}:{self.port}"
        self.env = {"RAY_USAGE_STATS_ENABLED": "0"}
        if token:
            self.env |= {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}
        # The nodes' workers import the earshot this process runs (a work tree, not only the
        # installed one).
        import earshot

        src = str(Path(earshot.__file__).resolve().parents[1])
        path = os.environ.get("PYTHONPATH", "")
        self._extra_env = {"PYTHONPATH": os.pathsep.join(p for p in (src, path) if p)}
        self._extra_env |= dict(env or {})
        self.procs: list[subprocess.Popen] = []

    def _start_node(self, i: int) -> None:
        common = [
            "--num-cpus", str(self.cpus),
            "--object-store-memory", str(self.object_store_mb << 20),
            "--node-ip-address", LOOPBACK,
            "--dashboard-agent-listen-port", str(free_port()),
            "--metrics-export-port", str(free_port()),
            "--runtime-env-agent-port", str(free_port()),
            "--disable-usage-stats",
            "--block",
        ]  # fmt: skip
        if i == 0:
            head = [
                "--head",
                "--port", str(self.port),
                "--include-dashboard=false",
                "--dashboard-port", str(free_port()),
                "--temp-dir", str(self.base / "head"),
            ]  # fmt: skip
            args = head + common
        else:
            args = ["--address", self.address, *common]
        log = open(self.base / f"node{i}.log", "wb")  # noqa: SIM115 (kept for the process)
        env = {**os.environ, **self._extra_env, **self.env}
        proc = subprocess.Popen(
            [_bin("ray"), "start", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped as one
        )
        log.close()
        self.procs.append(proc)

    def start(self) -> RayCluster:
        try:
            self._start_node(0)
            _wait_port(self.port, self.procs[0], 60, "the Ray head")
            for i in range(1, self.n_nodes):
                self._start_node(i)
            self.wait_nodes(self.n_nodes, 90)
        except BaseException as e:
            logs = self.logs()
            self.stop()
            if isinstance(e, RuntimeError):
                raise RuntimeError(f"{e}\n{logs}") from None
            raise
        return self

    def wait_nodes(self, n: int, timeout: float) -> None:
        """Until `n` nodes are alive (asked through `ray status`, a separate process)."""
        deadline = time.monotonic() + timeout
        env = {**os.environ, **self.env}
        last = ""
        while time.monotonic() < deadline:
            for proc in self.procs:
                if proc.poll() is not None:
                    raise RuntimeError(f"a Ray node exited ({proc.returncode}): {self.logs()}")
            out = subprocess.run(
                [_bin("ray"), "status", "--address", self.address],
                capture_output=True,
                text=True,
                env=env,
                timeout=60,
            )
            last = out.stdout + out.stderr
            active = last.split("Active:")[-1].split("Pending:")[0] if "Active:" in last else ""
            if active.count("node_") >= n:
                return
            time.sleep(1.0)
        raise RuntimeError(f"{n} Ray nodes were not up within {timeout:g} s: {last[-2000:]}")

    def logs(self) -> str:
        return "\n".join(
            p.read_text(errors="replace")[-2000:] for p in sorted(self.base.glob("node*.log"))
        )

    def stop(self) -> None:
        for proc in reversed(self.procs):  # workers first, then the head
            _stop_group(proc)
        self.procs.clear()
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> RayCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class MotoS3:
    """moto's S3 server on a free loopback port. `env`: what boto3, pyarrow and earshot need
    to talk to it (endpoint and test credentials)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://{LOOPBACK}:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
        }
        self.proc: subprocess.Popen | None = None

    def start(self) -> MotoS3:
        self.proc = subprocess.Popen(
            [_bin("moto_server"), "-H", LOOPBACK, "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            _wait_port(self.port, self.proc, 30, "moto_server")
        except BaseException:
            self.stop()
            raise
        return self

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        )

    def stop(self) -> None:
        if self.proc is not None:
            _stop_group(self.proc, 5)
            self.proc = None

    def __enter__(self) -> MotoS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_shards(model, roots, out, files_per_shard: int = 4, batch_size: int = 1) -> str:
    """The recordings under `roots` (folders or s3:// prefixes) embedded by `model` into shards
    at `out`, in listing order, as `earshot index --ray --shards` writes them but in this
    process (the shard writer, no Ray): for tests of search over shards. Returns `out`'s URI."""
    from earshot.model.io import model_id
    from earshot.scale import shards as sh
    from earshot.scale.shard_writer import ShardWriter
    from earshot.scale.storage import Location, list_recordings

    listed, _ = list_recordings([str(r) for r in roots])
    plan = [(i + 1, f.uri, f.version) for i, f in enumerate(listed)]
    writer = ShardWriter.around(model, str(out), batch_size=batch_size)
    loc = Location(out)
    tags = list(getattr(model, "tag_names", None) or ())
    manifest = sh.Manifest(model_id(model), model.config.joint_dim, {}, tags, len(plan) + 1)
    for at in range(0, len(plan), files_per_shard):
        part = plan[at : at + files_per_shard]
        report = writer.write_shard(sh.shard_name(part), [list(p) for p in part])
        manifest.shards[report["name"]] = {"files": len(part)}
    sh.save_manifest(loc, manifest)
    return loc.uri


def catalogue_and_shards(base: Path, model, library: Path, cuts: Sequence[int]):
    """`library` indexed twice with `model`, batch 1: into the catalogue `base`/c.sqlite (as
    `earshot index` does) and by the shard writer into shards under `base`/shards, the files
    in listing order cut at `cuts` (e.g. (5,): two shards). Returns (db path, shards
    Location), for tests that compare the two."""
    from earshot.index.build import Indexer
    from earshot.index.store import Catalogue
    from earshot.model.io import model_id
    from earshot.scale import shards as sh
    from earshot.scale.shard_writer import ShardWriter
    from earshot.scale.storage import Location, list_recordings

    db = Path(base) / "c.sqlite"
    with Catalogue(db) as cat:
        Indexer(cat, model, workers=0, batch_size=1, progress=False).run([str(library)])
    listed, _ = list_recordings([str(library)])
    plan = [(i + 1, f.uri, f.version) for i, f in enumerate(listed)]
    writer = ShardWriter.around(model, str(Path(base) / "shards"), batch_size=1)
    loc = Location(Path(base) / "shards")
    manifest = sh.Manifest(
        model_id(model), model.config.joint_dim, {}, list(model.tag_names), len(plan) + 1
    )
    bounds = [0, *cuts, len(plan)]
    for lo, hi in itertools.pairwise(bounds):
        part = plan[lo:hi]
        report = writer.write_shard(sh.shard_name(part), [list(p) for p in part])
        manifest.shards[report["name"]] = {"files": len(part)}
    sh.save_manifest(loc, manifest)
    return db, loc
