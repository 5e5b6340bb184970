"""Decoding in worker processes, for `index/build.py`'s indexer: a fresh spawned pool decodes
files (`decoding.decode_entry`, one file each) until the queue is empty or a worker dies (a
decoder crash, the OOM killer). A dead worker breaks its pool and fails every file then in
flight, so those are retried one at a time in pools of one: the file that kills a worker again
is skipped (`CRASHED`), and no other file is lost. `audio` is the model's `AudioConfig`.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections import deque
from collections.abc import Generator, Iterator
from concurrent.futures.process import BrokenProcessPool

from earshot.index import decoding
from earshot.index.decoding import Decoded
from earshot.index.scan import ScanEntry

CRASHED = "the decoder crashed on it (its worker process died); re-export it"


def decode_in_workers(entries: list[ScanEntry], audio, workers: int) -> Iterator[Decoded]:
    """`decode_entry` of each entry, in worker processes. A worker that dies (a decoder
    crash, the OOM killer) breaks its pool: the files then in flight are retried one at a
    time, so the one that kills a worker again is skipped and no other is lost."""
    queue = deque(entries)
    while queue:
        lost = yield from pool_pass(queue, audio, workers, 2 * workers)
        suspects = deque(lost)
        while suspects:
            for culprit in (yield from pool_pass(suspects, audio, 1, 1)):
                yield Decoded(culprit, error=CRASHED)


def pool_pass(
    queue: deque, audio, workers: int, limit: int, decode=None
) -> Generator[Decoded, None, list]:
    """`decode` (default `decode_entry`) entries from `queue` in a fresh pool until it is
    empty or the pool breaks; returns the entries in flight when it broke (one at most for
    a pool of one)."""
    decode = decode or decoding.decode_entry  # looked up now: tests replace it by name
    ctx = multiprocessing.get_context("spawn")  # no forked torch state in workers
    in_flight: dict[cf.Future, ScanEntry] = {}
    lost: list[ScanEntry] = []
    with cf.ProcessPoolExecutor(
        workers, mp_context=ctx, initializer=decoding.worker_init, initargs=(os.getpid(),)
    ) as pool:
        while (queue or in_flight) and not lost:
            while queue and len(in_flight) < limit:
                entry = queue.popleft()
                try:
                    in_flight[pool.submit(decode, entry, audio)] = entry
                except BrokenProcessPool:
                    queue.appendleft(entry)  # never started: not a suspect
                    break
            done, _ = cf.wait(in_flight, return_when=cf.FIRST_COMPLETED)
            for f in done:
                entry = in_flight.pop(f)
                if f.exception() is None:
                    yield f.result()
                else:  # only BrokenProcessPool: `decode` never raises
                    lost.append(entry)
        # A broken pool fails every future it had: keep those that finished first.
        for f, entry in in_flight.items():
            if f.done() and f.exception() is None:
                yield f.result()
            else:
                lost.append(entry)
    return lost
