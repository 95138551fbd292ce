"""Timers on the asyncio event loop that serves the page, for the Logic's debouncers.

The Logic's :class:`HyperSORTModule.Debounce.Debouncer` takes a scheduler; in Slicer it gets Qt
timers, here :class:`AsyncioScheduler` (callbacks run in the event loop's thread, like the
page's other handlers).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Callable


class AsyncioTimer:
    """A restartable single-shot timer on an asyncio loop (``loop.call_later``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, onFired: Callable[[], None] | None = None) -> None:
        self._loop = loop
        self._handle: asyncio.TimerHandle | None = None
        self._onFired = onFired

    def start(self, delayMs: float, callback: Callable[[], None]) -> None:
        self.stop()
        loop = self._loop or asyncio.get_event_loop()

        def fire() -> None:
            self._handle = None
            try:
                callback()
            except Exception:  # a timer callback has no caller to raise to
                logging.exception("HyperSORT explore: a debounced update failed")
            if self._onFired is not None:
                self._onFired()

        self._handle = loop.call_later(max(0.0, float(delayMs)) / 1000.0, fire)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def isActive(self) -> bool:
        return self._handle is not None


class AsyncioScheduler:
    """Creates :class:`AsyncioTimer` s; ``onFired`` runs after every timer callback (to push the
    new state and images to the page)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, onFired: Callable[[], None] | None = None) -> None:
        self.loop = loop
        self.onFired = onFired

    def createTimer(self) -> AsyncioTimer:
        return AsyncioTimer(self.loop, lambda: self.onFired() if self.onFired else None)
