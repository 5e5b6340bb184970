"""What a C library prints to the process's stderr while decoding one file, said with its name.

libsndfile decodes MP3 through libmpg123, which writes its complaints straight to file
descriptor 2 ("[src/libmpg123/layer3.c:...] error: part2_3_length (780) too large...") with no
file name, so a user indexing thousands of files cannot tell which one is damaged. Around each
call into the decoder, fd 2 goes to a temporary file; afterwards each line is printed again as
`earshot: warning: <file>: <line>`. Only around MP3 decoding: while fd 2 is redirected, what
another thread prints to stderr would be caught too (and come out under the file's name).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


def shown(path: str) -> str:
    """A path as printable text, whatever bytes its name holds."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


@contextlib.contextmanager
def named_c_stderr(path: str) -> Iterator[None]:
    try:
        saved = os.dup(2)
    except OSError:  # no stderr to redirect
        yield
        return
    try:
        with tempfile.TemporaryFile() as tmp:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                tmp.seek(0)
                text = tmp.read(64 * 1024).decode("utf-8", "replace")
                for line in text.splitlines():
                    if line.strip():
                        print(f"earshot: warning: {shown(path)}: {line.strip()}", file=sys.stderr)
    finally:
        os.close(saved)
