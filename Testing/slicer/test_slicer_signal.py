"""The plain-Python signal the logic reports through, and the panel's logic interface."""

from __future__ import annotations

import pytest

from HyperSORTModule.LogicInterface import PanelLogic
from HyperSORTModule.Signal import Signal


def test_signal_calls_connected_slots_in_order_and_disconnects():
    signal, seen = Signal(), []
    first = signal.connect(lambda *a: seen.append(("first", a)))
    signal.connect(lambda *a: seen.append(("second", a)))
    signal.connect(first)  # connecting twice calls once
    signal.emit(1, "x")
    assert seen == [("first", (1, "x")), ("second", (1, "x"))]
    signal.disconnect(first)
    signal.emit(2)
    assert seen[-1] == ("second", (2,)) and len(signal) == 1
    signal.disconnect()
    signal.emit(3)
    assert len(seen) == 3


def test_core_logic_provides_everything_the_panel_uses(logic):
    pytest.importorskip("slicer")
    declared = set(PanelLogic.__annotations__) | {n for n in vars(PanelLogic) if not n.startswith("_")}
    missing = {name for name in declared if not hasattr(logic, name)}
    # the parameter node comes with the application logic (ScriptedLoadableModuleLogic)
    assert missing == {"getParameterNode"}


def test_panel_uses_nothing_outside_the_interface():
    import re
    from pathlib import Path

    folder = Path(__file__).resolve().parents[2] / "HyperSORT" / "HyperSORTModule"
    used = {name for panel in ("Widget.py", "ReviewPanel.py")
            for name in re.findall(r"\blogic\.([A-Za-z_]\w*)", (folder / panel).read_text())}
    declared = set(PanelLogic.__annotations__) | {n for n in vars(PanelLogic) if not n.startswith("_")}
    assert used - declared == set(), "add these to LogicInterface.PanelLogic"
