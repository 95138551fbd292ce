"""Coalescing of rapid events (probe drags, spin box edits) into few expensive updates.

The timing source is a small interface so that the same code runs with Qt timers inside
Slicer and with a manual clock in plain Python (tests, scripts):

    >>> clock = ManualScheduler()
    >>> calls = []
    >>> debouncer = Debouncer(lambda: calls.append(clock.now), delayMs=150, scheduler=clock)
    >>> for _ in range(5):
    ...     debouncer.trigger()
    >>> clock.advance(149)
    0
    >>> clock.advance(1), calls
    (1, [150.0])
"""

from __future__ import annotations

from typing import Callable, Protocol


class Timer(Protocol):
    """A restartable single-shot timer."""

    def start(self, delayMs: float, callback: Callable[[], None]) -> None:
        """Call ``callback`` once after ``delayMs``; starting an active timer restarts it."""

    def stop(self) -> None:
        """Forget the pending call, if any."""

    def isActive(self) -> bool:
        """Whether a call is pending."""


class Scheduler(Protocol):
    """Creates timers (Qt timers in Slicer, :class:`ManualScheduler` timers elsewhere)."""

    def createTimer(self) -> Timer:
        ...


class _ManualTimer:
    def __init__(self, scheduler: "ManualScheduler") -> None:
        self._scheduler = scheduler
        self.due: float | None = None
        self.callback: Callable[[], None] | None = None

    def start(self, delayMs: float, callback: Callable[[], None]) -> None:
        self.due = self._scheduler.now + float(delayMs)
        self.callback = callback

    def stop(self) -> None:
        self.due = None
        self.callback = None

    def isActive(self) -> bool:
        return self.due is not None


class ManualScheduler:
    """A scheduler driven by hand: time moves only when :meth:`advance` or :meth:`runPending` is called.

    Used where no event loop runs (plain Python, tests): deterministic and instantaneous.
    """

    def __init__(self) -> None:
        self.now = 0.0
        self._timers: list[_ManualTimer] = []

    def createTimer(self) -> _ManualTimer:
        timer = _ManualTimer(self)
        self._timers.append(timer)
        return timer

    def _nextDue(self, until: float | None) -> _ManualTimer | None:
        active = [t for t in self._timers if t.due is not None and (until is None or t.due <= until)]
        return min(active, key=lambda t: t.due) if active else None

    def advance(self, ms: float) -> int:
        """Move the clock forward by ``ms``, firing due timers in time order; returns how many fired."""
        target = self.now + float(ms)
        fired = 0
        while (timer := self._nextDue(target)) is not None:
            self.now = max(self.now, timer.due)
            callback = timer.callback
            timer.stop()
            callback()
            fired += 1
        self.now = target
        return fired

    def runPending(self, maxRounds: int = 100) -> int:
        """Fire every pending timer (and the ones they start), advancing the clock as needed."""
        fired = 0
        for _ in range(maxRounds):
            timer = self._nextDue(None)
            if timer is None:
                break
            fired += self.advance(timer.due - self.now)
        return fired

    def pendingCount(self) -> int:
        return sum(t.isActive() for t in self._timers)


class Debouncer:
    """Turn bursts of :meth:`trigger` calls into single calls of ``callback``.

    Args:
        callback: the expensive update; it reads the latest state itself.
        delayMs: how long after the first trigger of a burst the update runs.
        scheduler: the source of timers.
        restart: if True every trigger restarts the wait, so the update runs ``delayMs`` after the
            *last* trigger (used to detect that a drag has stopped); if False the update runs
            ``delayMs`` after the *first* trigger of a burst and later triggers join it, so a
            continuous drag still refreshes about every ``delayMs``.

    A trigger that arrives while the callback runs (an event loop processed during a long
    update) schedules one more run after it instead of re-entering it.
    """

    def __init__(self, callback: Callable[[], None], delayMs: float, scheduler: Scheduler,
                 restart: bool = False) -> None:
        if delayMs < 0:
            raise ValueError(f"delayMs must be >= 0, found {delayMs}.")
        self.callback = callback
        self.delayMs = float(delayMs)
        self.restart = bool(restart)
        self._timer = scheduler.createTimer()
        self._pending = False
        self._running = False
        self.runCount = 0

    @property
    def pending(self) -> bool:
        return self._pending

    def trigger(self) -> None:
        self._pending = True
        if self._running:
            return
        if self.restart or not self._timer.isActive():
            self._timer.start(self.delayMs, self._fire)

    def flush(self) -> None:
        """Run the pending update now (e.g. on Accept)."""
        if self._pending and not self._running:
            self._timer.stop()
            self._fire()

    def cancel(self) -> None:
        self._timer.stop()
        self._pending = False

    def _fire(self) -> None:
        if not self._pending:
            return
        self._pending = False
        self._running = True
        try:
            self.runCount += 1
            self.callback()
        finally:
            self._running = False
            if self._pending:
                self._timer.start(self.delayMs, self._fire)
