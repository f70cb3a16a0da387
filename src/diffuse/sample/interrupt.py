"""SIGTERM raised as an interrupt while sampling, so a stopped run keeps what it made.

Python turns SIGINT (Ctrl-C) into KeyboardInterrupt; :func:`sigterm_interrupts` makes
SIGTERM (what a batch system or ``kill`` sends) raise :class:`Terminated`, a
KeyboardInterrupt too, so one ``except KeyboardInterrupt`` saves the samples made in
both cases. A command exits with status 128 + the signal's number (130, 143), as a shell
reports a process the signal killed.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived."""


def _raise_terminated(signum, frame) -> None:
    raise Terminated


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block SIGTERM raises :class:`Terminated` (in the main thread, where
    Python runs signal handlers; elsewhere nothing changes)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def signal_name(interrupt: KeyboardInterrupt) -> str:
    """ "SIGTERM" for :class:`Terminated`, else "SIGINT"."""
    return "SIGTERM" if isinstance(interrupt, Terminated) else "SIGINT"


def exit_status(name: str) -> int:
    """The exit status of a command stopped by signal ``name``: 128 + its number."""
    return 128 + signal.Signals[name].value
