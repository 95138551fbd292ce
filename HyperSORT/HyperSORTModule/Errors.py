"""Exceptions the module shows to the user as they are (one readable sentence, no traceback)."""


class HyperSORTError(RuntimeError):
    """A problem the user can act on: a wrong input, a missing run, a refused overwrite."""


class SegmentationCancelled(HyperSORTError):
    """The user pressed Cancel during a long segmentation; nothing was written."""
