"""The module logic inside the Slicer application (needs Slicer's Qt).

:class:`HyperSORTModule.CoreLogic.HyperSORTCoreLogic` on ``slicer.mrmlScene``, with Qt timers for
debouncing, segmentations in a worker thread beside the event loop, and the parameter node.
"""

from __future__ import annotations

import slicer
from slicer.ScriptedLoadableModule import ScriptedLoadableModuleLogic

from HyperSORTModule.CoreLogic import HyperSORTCoreLogic
from HyperSORTModule.Parameter import HyperSORTParameterNode


class HyperSORTLogic(HyperSORTCoreLogic, ScriptedLoadableModuleLogic):
    """The core logic on ``slicer.mrmlScene`` with Qt timers and a background runner."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from HyperSORTModule.QtSupport import BackgroundRunner, QtTimerScheduler

        HyperSORTCoreLogic.__init__(self, slicer.mrmlScene, QtTimerScheduler())
        self.runner = BackgroundRunner()

    def getParameterNode(self):
        return HyperSORTParameterNode(super().getParameterNode())
