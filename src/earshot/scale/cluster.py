"""Joining a Ray cluster from the driver (`earshot index --ray`, `earshot search --ray`).

Ray's driver prints what the cluster reports (a worker that died, a task retried) to
`sys.stdout`, whatever `log_to_driver` says: from its own threads as it arrives, and what its
deduplicator held back when it disconnects (at exit, after earshot's answer). earshot's stdout
is its answer (`--json` output a script reads), so once joined, a write to stdout made by Ray
alone (no code but Ray's and the thread machinery on the calling stack) goes to stderr: the
user still sees the cluster's messages, and stdout stays one JSON document. What earshot or a
program using it prints (even through Ray's patched `print`) stays on stdout.
"""

from __future__ import annotations

import os
import sys

from earshot.errors import EarshotError

# Passed on to every actor, so the nodes see the bucket and the weights the driver sees.
_FORWARDED_ENV = (
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "EARSHOT_WEIGHTS_DIR",
    "EARSHOT_CACHE_DIR",
    "HF_HUB_OFFLINE",
    "EARSHOT_TEST_SHARD_DELAY_S",  # fault tests only: a pause before each file
)


def forwarded_env() -> dict[str, str]:
    return {k: os.environ[k] for k in _FORWARDED_ENV if os.environ.get(k)}


def _made_by_ray_alone(frame) -> bool:
    ray = False
    while frame is not None:
        name = frame.f_globals.get("__name__", "")
        if name == "ray" or name.startswith("ray."):
            ray = True
        elif name != "threading":
            return False
        frame = frame.f_back
    return ray


class AnswerStdout:
    """A stand-in for `sys.stdout`: writes go to `out`, except those Ray's code alone makes
    (see the module's text), which go to `err`. Everything else (encoding, fileno, isatty)
    is `out`'s."""

    def __init__(self, out, err):
        self.out, self.err = out, err

    def _sink(self):
        # Frame 2: whoever called write() (print is a builtin, no frame of its own).
        return self.err if _made_by_ray_alone(sys._getframe(2)) else self.out

    def write(self, s: str) -> int:
        return self._sink().write(s)

    def writelines(self, lines) -> None:
        self._sink().writelines(lines)

    def flush(self) -> None:
        self.out.flush()
        self.err.flush()

    def __getattr__(self, name):
        return getattr(self.out, name)


def keep_stdout_for_the_answer() -> None:
    """Route Ray's stdout writes to stderr from now on (see the module's text).
    Idempotent; it wraps whatever `sys.stdout` is now, so a caller that swapped it (a test's
    capture) keeps its stream."""
    if not isinstance(sys.stdout, AnswerStdout):
        sys.stdout = AnswerStdout(sys.stdout, sys.stderr)


def connect(address: str, env: dict | None = None) -> None:
    """Join the Ray cluster at `address` ('auto': the one this machine runs; 'local': a new
    one in this process, for a single machine), once per process."""
    import ray

    keep_stdout_for_the_answer()
    if ray.is_initialized():
        return
    kwargs: dict = {"log_to_driver": False, "configure_logging": False}
    if env:
        kwargs["runtime_env"] = {"env_vars": env}
    try:
        if address == "local":
            ray.init(**kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, RuntimeError, ValueError) as e:
        raise EarshotError(f"cannot join the Ray cluster at '{address}': {e}") from None
