"""The latent-map plot on a real MRML scene: chart selection does not propagate into the panel's
view, "Show in layout" finds the plot view mapped in the layout, the axes stay fixed while dragging."""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from HyperSORTModule.LatentMapPlot import latentRange, layoutPlotViewNode  # noqa: E402


def _layout_view(scene, name: str, mapped: bool = True):
    node = scene.AddNewNodeByClass("vtkMRMLPlotViewNode", name)
    node.SetMappedInLayout(mapped)
    return node


def test_another_modules_chart_selection_does_not_replace_the_map(scene, logic):
    plot = logic.buildLatentMap()
    layout = _layout_view(scene, "PlotView1")
    other = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", "another module's chart")
    application = slicer.vtkSlicerApplicationLogic()
    application.SetMRMLScene(scene)
    application.GetSelectionNode().SetActivePlotChartID(other.GetID())
    application.PropagatePlotChartSelection()
    assert layout.GetPlotChartNodeID() == other.GetID()  # what propagation does to a view that allows it
    assert plot.viewNode.GetPlotChartNodeID() == plot.chartNode.GetID()
    assert not plot.viewNode.GetDoPropagatePlotChartSelection()


def test_show_in_layout_picks_the_plot_view_mapped_in_the_layout(scene, logic):
    plot = logic.buildLatentMap()
    assert layoutPlotViewNode(scene, plot.chartNode) is None  # only the panel's own view exists
    _layout_view(scene, "hidden plot view", mapped=False)
    first = _layout_view(scene, "PlotView1")
    assert layoutPlotViewNode(scene, plot.chartNode) is first
    showing = _layout_view(scene, "PlotView2")
    showing.SetPlotChartNodeID(plot.chartNode.GetID())
    assert layoutPlotViewNode(scene, plot.chartNode) is showing


def test_axis_ranges_are_fixed_and_do_not_follow_a_drag(scene, logic):
    plot = logic.buildLatentMap()
    chart = plot.chartNode
    low, high = latentRange(np.vstack([plot.latents, plot.centres]) if len(plot.centres) else plot.latents)
    assert not chart.GetXAxisRangeAuto() and not chart.GetYAxisRangeAuto()
    np.testing.assert_allclose(chart.GetXAxisRange(), (low[0], high[0]))
    np.testing.assert_allclose(chart.GetYAxisRange(), (low[1], high[1]))
    assert (low <= plot.latents.min(0)).all() and (high >= plot.latents.max(0)).all()
    table = plot.probeTable.GetTable()
    table.SetValueByName(0, "z1", vtk.vtkVariant(float(high[0] * 3 + 1)))
    table.Modified()
    np.testing.assert_allclose(chart.GetXAxisRange(), (low[0], high[0]))
