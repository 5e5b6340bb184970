"""How `earshot serve` runs uvicorn: its HTTP parser, connection limits and timeouts.

Timeouts against clients that connect and then send slowly or not at all (slow-loris):

- Request head: the request line and headers must arrive within `HEADER_TIMEOUT_S` of the
  connection opening (or of the previous response on a kept-alive connection), else the
  connection is closed. uvicorn has no such timeout of its own: its keep-alive timer is
  cancelled by every byte that arrives, so a client sending a header byte a second held a
  connection for ever.
- Idle keep-alive connections close after `KEEP_ALIVE_S`.
- Request head size: at most `MAX_HEAD_BYTES` (h11's limit), else 400.
- Upload bodies: `Settings.upload_timeout_s` for all of it, `Settings.upload_idle_s` between
  chunks (`uploads.py`), else 408 and the connection is closed.
- At most `MAX_CONNECTIONS` connections at once; past that, 503.
- Ctrl+C waits at most `SHUTDOWN_S` for requests in flight.
"""

from __future__ import annotations

import asyncio

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0
KEEP_ALIVE_S = 5
MAX_HEAD_BYTES = 16 * 1024
MAX_CONNECTIONS = 64
SHUTDOWN_S = 5


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head does not arrive within
    `head_timeout` seconds."""

    head_timeout: float = HEADER_TIMEOUT_S

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        cycle = self.cycle
        super().handle_events()
        if self.cycle is not cycle:  # a request's head was read: the app has it now
            self._cancel_head_timer()

    def on_response_complete(self) -> None:
        # Armed first: the next request's head (already buffered, or to come) has as long,
        # and handle_events, called by the base class for a pipelined request, cancels it.
        if not self.transport.is_closing():
            self._arm_head_timer()
        super().on_response_complete()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        timer = getattr(self, "_head_timer", None)
        if timer is not None:
            timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def server_options(head_timeout_s: float = HEADER_TIMEOUT_S) -> dict:
    """The keyword arguments of `uvicorn.run` / `uvicorn.Config` for `earshot serve`, besides
    the app, host and port (see the module docstring)."""
    protocol = type(
        "EarshotH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout": float(head_timeout_s)}
    )
    return {
        "http": protocol,
        "timeout_keep_alive": KEEP_ALIVE_S,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "limit_concurrency": MAX_CONNECTIONS,
        "timeout_graceful_shutdown": SHUTDOWN_S,
        "log_level": "warning",
        "access_log": False,
    }


def server_config(
    app, host: str, port: int, head_timeout_s: float = HEADER_TIMEOUT_S, **options
) -> uvicorn.Config:
    """A uvicorn config as `earshot serve` runs it; `options` override any of them."""
    return uvicorn.Config(app, host=host, port=port, **(server_options(head_timeout_s) | options))
