"""Qt pieces for the Slicer application: timers for the debouncer, a worker thread that keeps
the window responsive, progress with Cancel."""

from __future__ import annotations

import threading
from typing import Callable

import qt


class QtTimer:
    """A single-shot ``qt.QTimer`` behind the :class:`HyperSORTModule.Debounce.Timer` interface."""

    def __init__(self) -> None:
        self._timer = qt.QTimer()
        self._timer.setSingleShot(True)
        self._callback: Callable[[], None] | None = None
        self._timer.connect("timeout()", self._onTimeout)

    def _onTimeout(self) -> None:
        callback, self._callback = self._callback, None
        if callback is not None:
            callback()

    def start(self, delayMs: float, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._timer.start(int(round(delayMs)))

    def stop(self) -> None:
        self._timer.stop()
        self._callback = None

    def isActive(self) -> bool:
        return bool(self._timer.isActive())


class QtTimerScheduler:
    """Creates :class:`QtTimer` objects: debounced updates run from the Qt event loop."""

    def createTimer(self) -> QtTimer:
        return QtTimer()


class BackgroundRunner:
    """Runs a computation in a worker thread and keeps processing GUI events until it ends.

    The computation (the library's segmentation: numpy and torch only) must not touch Qt or
    MRML; the logic reads nodes before and writes them after it. Exceptions are re-raised in
    the calling (GUI) thread.
    """

    def __init__(self, pollSeconds: float = 0.03) -> None:
        self.pollSeconds = pollSeconds
        self.progress: "ProgressWithCancel | None" = None

    def __call__(self, compute: Callable[[], object]) -> object:
        outcome: dict[str, object] = {}

        def work() -> None:
            try:
                outcome["value"] = compute()
            except BaseException as error:  # handed to the GUI thread below
                outcome["error"] = error

        thread = threading.Thread(target=work, name="HyperSORT segmentation", daemon=True)
        thread.start()
        while thread.is_alive():
            thread.join(self.pollSeconds)
            if self.progress is not None:
                self.progress.refresh()
            qt.QApplication.processEvents()
        if "error" in outcome:
            raise outcome["error"]
        return outcome.get("value")


class ProgressWithCancel:
    """A progress bar and a Cancel button for a long segmentation (used as a context manager).

    ``progress`` and ``cancel`` are handed to the logic; they may be called from the worker
    thread, so they only store and read plain values; :meth:`refresh` (GUI thread, called by
    the :class:`BackgroundRunner`) shows the progress.
    """

    def __init__(self, progressBar, cancelButton, runner: BackgroundRunner, busyWidgets=(),
                 onMessage: Callable[[str], None] | None = None) -> None:
        self.progressBar = progressBar
        self.cancelButton = cancelButton
        self.runner = runner
        self.busyWidgets = list(busyWidgets)
        self.onMessage = onMessage
        self.cancelled = False
        self.fraction = 0.0
        #: Work without a fraction (loading a run, pip) shows a busy bar and no Cancel.
        self.indeterminate = False
        self.message: str | None = None
        self._shownMessage: str | None = None
        self.cancelButton.connect("clicked()", self._onCancel)

    def _onCancel(self) -> None:
        self.cancelled = True

    def __enter__(self) -> "ProgressWithCancel":
        self.cancelled = False
        self.fraction = 0.0
        self.message = self._shownMessage = None
        self.progressBar.maximum = 0 if self.indeterminate else 100
        self.progressBar.value = 0
        self.progressBar.visible = True
        self.cancelButton.visible = not self.indeterminate
        for widget in self.busyWidgets:
            widget.enabled = False
        self.runner.progress = self
        qt.QApplication.processEvents()
        return self

    def __exit__(self, *exc) -> None:
        self.runner.progress = None
        self.indeterminate = False
        self.progressBar.maximum = 100
        self.progressBar.visible = False
        self.cancelButton.visible = False
        for widget in self.busyWidgets:
            widget.enabled = True

    def progress(self, fraction: float) -> None:
        self.fraction = max(0.0, min(1.0, float(fraction)))

    def cancel(self) -> bool:
        return self.cancelled

    def note(self, message: str) -> None:
        """A line to show (pip's output); may be called from the worker thread."""
        self.message = str(message)

    def refresh(self) -> None:
        if not self.indeterminate:
            self.progressBar.value = int(round(100 * self.fraction))
        if self.message != self._shownMessage and self.onMessage is not None:
            self._shownMessage = self.message
            self.onMessage(self.message)
