"""Which segmentation is running, and what a request arriving meanwhile does (Qt-free).

The application computes in a worker thread while its event loop runs, so a click, a drag or a
scene close can arrive during a computation. A later request cancels a running *preview* and
waits for its computation to end; any other running job makes it fail with a message (the panel
disables those buttons meanwhile). A cancelled job writes nothing.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

from HyperSORTModule.Errors import HyperSORTError


class Job:
    """One running computation: its kind ("preview", "segmentation", "load"), a cancel request,
    and whether its computation ended."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.cancelled = False
        self.done = threading.Event()


class JobControl:
    """Mixin of the core logic: runs computations through ``self.runner`` one at a time.

    Uses ``self.runner`` (``runner(compute) -> result``, or None to run directly), ``self._job``
    and ``self.previewStopSeconds``, set by the logic's constructor.
    """

    runner: Optional[Callable[[Callable[[], object]], object]]
    _job: Optional[Job]
    previewStopSeconds: float

    @property
    def busy(self) -> bool:
        """Whether a segmentation is computing (the GUI keeps processing events meanwhile)."""
        return self._job is not None and not self._job.done.is_set()

    def cancelRunningJob(self) -> None:
        """Ask the running segmentation, if any, to stop; it then writes nothing."""
        if self._job is not None:
            self._job.cancelled = True

    def _stopRunningPreview(self) -> None:
        """A request arriving while a preview computes (from the event loop the application keeps
        running) cancels the preview and waits for its computation to end."""
        running = self._job
        if running is None or running.done.is_set():
            return
        if running.kind != "preview":
            raise HyperSORTError("A segmentation is still running: wait for it to finish or press Cancel.")
        running.cancelled = True
        if not running.done.wait(self.previewStopSeconds):
            raise HyperSORTError("The preview did not stop in time; try again in a moment.")

    def _run(self, compute, job: Job):
        if self.busy:
            raise HyperSORTError("A segmentation is still running: wait for it to finish or press Cancel.")
        self._job = job

        def guarded():
            try:
                return compute()
            finally:
                job.done.set()

        try:
            return guarded() if self.runner is None else self.runner(guarded)
        finally:
            job.done.set()
            if self._job is job:
                self._job = None
