"""SIGINT and SIGTERM while training: finish the step, save a checkpoint, exit cleanly."""

from __future__ import annotations

import signal
import threading

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopRequest:
    """Context manager catching SIGINT/SIGTERM (from the main thread only).

    The first signal sets :attr:`signal`, which the training loop checks after every
    step; a second one gives up waiting and raises KeyboardInterrupt (no checkpoint).
    The previous handlers come back on exit.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()

    @property
    def name(self) -> str | None:
        """ "SIGINT" or "SIGTERM" once a signal arrived."""
        return signal.Signals(self.signal).name if self.signal is not None else None

    def _handle(self, signum, frame) -> None:
        if self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
