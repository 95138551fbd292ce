"""Which Slicer releases the module supports, and the message shown on the others.

Slicer 5.8 runs Python 3.9 and Slicer 5.10 and later run Python 3.12; the library is written
for Python 3.9 and later (``Testing/test_oldest_python.py`` imports it and parses its
configurations on the oldest interpreter found). Older Slicer releases are refused with a
message instead of failing somewhere inside a run.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

#: The oldest Slicer release the extension supports, and the Python it ships.
MINIMUM_SLICER = (5, 8)
MINIMUM_PYTHON = (3, 9)


def unsupportedReason(slicerVersion: Sequence[int], pythonVersion: Sequence[int] = tuple(sys.version_info[:2])
                      ) -> Optional[str]:
    """A sentence saying why this Slicer/Python cannot run HyperSORT, or None when it can."""
    slicerVersion, pythonVersion = tuple(slicerVersion[:2]), tuple(pythonVersion[:2])
    if slicerVersion < MINIMUM_SLICER or pythonVersion < MINIMUM_PYTHON:
        found = ".".join(str(v) for v in slicerVersion)
        python = ".".join(str(v) for v in pythonVersion)
        return (f"HyperSORT needs 3D Slicer {MINIMUM_SLICER[0]}.{MINIMUM_SLICER[1]} or later (Python "
                f"{MINIMUM_PYTHON[0]}.{MINIMUM_PYTHON[1]} or later); this is Slicer {found} with Python {python}. "
                "Install a current Slicer from https://download.slicer.org.")
    return None


def applicationReason() -> Optional[str]:
    """:func:`unsupportedReason` for the running Slicer application."""
    import slicer

    return unsupportedReason((int(slicer.app.majorVersion), int(slicer.app.minorVersion)))
