"""Start/stop plumbing shared by the test servers that run in a thread of their own."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from types import TracebackType
from typing import Self


class Startable:
    """``with server:`` starts it and stops it, whatever happens inside."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


class LoopThread(Startable):
    """A server whose asyncio loop runs in ``_thread`` until ``_stop_requested`` is set.

    Subclasses create the thread in ``start()`` and, once their loop runs, set ``_loop`` and
    ``_stop_requested``; ``stop()`` is the same for all of them. ``_tasks`` and ``_writers``
    are the connections the subclass's loop tracks, to close them when it stops."""

    STOP_TIMEOUT = 2.0

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # set by the thread once serving (or failed)
        self._start_error: BaseException | None = None
        # The fields below belong to the server thread once it runs.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    def stop(self) -> None:
        """Ask the loop to finish, join the thread. Safe to call twice. Raises RuntimeError
        if the thread outlives STOP_TIMEOUT."""
        thread = self._thread
        if thread is None:
            return
        loop, event = self._loop, self._stop_requested
        if loop is not None and event is not None:
            # The loop may already be gone if the thread died; nothing to stop then.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)
        thread.join(self.STOP_TIMEOUT)
        if thread.is_alive():
            name = type(self).__name__
            raise RuntimeError(f"{name} thread did not stop within {self.STOP_TIMEOUT} s")
        self._thread = None
