"""A plain-Python signal: the logic announces progress, results and errors without knowing Qt.

Example:
    >>> changed = Signal()
    >>> seen = []
    >>> _ = changed.connect(seen.append)
    >>> changed.emit(3)
    >>> seen
    [3]
"""

from __future__ import annotations

from typing import Callable, List


class Signal:
    """Slots (callables) connected to one event; :meth:`emit` calls each with the event's arguments."""

    def __init__(self) -> None:
        self._slots: List[Callable[..., object]] = []

    def connect(self, slot: Callable[..., object]) -> Callable[..., object]:
        if slot not in self._slots:
            self._slots.append(slot)
        return slot

    def disconnect(self, slot: Callable[..., object] | None = None) -> None:
        """Disconnect ``slot``, or every slot when None."""
        self._slots = [] if slot is None else [s for s in self._slots if s != slot]

    def emit(self, *args) -> None:
        for slot in list(self._slots):
            slot(*args)

    def __len__(self) -> int:
        return len(self._slots)
