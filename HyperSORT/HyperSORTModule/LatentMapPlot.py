"""The latent map as Slicer plot nodes: training samples, style centres and a draggable probe.

Node chain (what qMRMLPlotView draws):

    vtkMRMLTableNode (case_id, z1..zD) -> vtkMRMLPlotSeriesNode (scatter, X/Y = two latent
    dimensions, label = case_id for the tooltip) -> vtkMRMLPlotChartNode -> vtkMRMLPlotViewNode

Samples are split into one table + series per colour group (one series has one colour), the
style centres have their own series, and the probe is a one-row table with its own series.
In the view's MovePoints mode VTK writes a dragged point's coordinates straight into its
table; the probe table is observed (a drag is a latent move), the other tables are restored
whenever something moves their points, so the map itself cannot be edited by accident.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import vtk

from HyperSORTModule.SegmentationNodes import CATEGORICAL

ROLE_ATTRIBUTE = "HyperSORT.Role"
LABEL_COLUMN = "case_id"
BASELINE_COLUMN = "baseline"

#: Colours of the suspicion bins, from unremarkable (blue-grey) to most suspicious (red).
SUSPICION_BINS = ((0.0, 0.5, (0.55, 0.63, 0.72)), (0.5, 0.75, (0.99, 0.80, 0.36)),
                  (0.75, 0.9, (0.96, 0.50, 0.20)), (0.9, 1.0, (0.80, 0.09, 0.11)))
SINGLE_COLOR = (0.20, 0.45, 0.70)
PROBE_COLOR = (0.05, 0.05, 0.05)
CENTRE_COLOR = (0.45, 0.45, 0.45)


def columnName(dimension: int) -> str:
    """Table column of latent dimension ``dimension`` (0-based): z1, z2, ..."""
    return f"z{dimension + 1}"


@dataclass(frozen=True)
class SampleGroup:
    """Training samples drawn in one colour (one plot series)."""

    name: str
    color: tuple[float, float, float]
    rows: tuple[int, ...]


def _column(sampleTable: dict | None, caseIds: Sequence[str], name: str) -> list[str] | None:
    """Values of column ``name`` of the analysis table in the order of ``caseIds``, or None."""
    if not sampleTable or name not in sampleTable or LABEL_COLUMN not in sampleTable:
        return None
    byCase = dict(zip(sampleTable[LABEL_COLUMN], sampleTable[name]))
    if any(case not in byCase for case in caseIds):
        return None
    return [byCase[case] for case in caseIds]


def groupSamples(caseIds: Sequence[str], sampleTable: dict | None, colorBy: str = "cluster",
                 clusterNames: Mapping[int, str] | None = None) -> list[SampleGroup]:
    """Split the training samples into colour groups.

    Args:
        caseIds: the run's case ids (row order of the latent table).
        sampleTable: columns of ``analysis/samples.csv`` (strings), or None when the run has no analysis.
        colorBy: "cluster" (one colour per style or cluster of the ``cluster`` column), "suspicion"
            (quantile bins of the suspicion score, red = most suspicious) or "none" (one colour).
        clusterNames: group name per value of the ``cluster`` column (the audit's ``style 0 (main mode)``,
            ``isolated 5``: :func:`HyperSORTLib.rundir.style_name`); ``cluster N`` for a value without one.
    """
    if colorBy not in ("cluster", "suspicion", "none"):
        raise ValueError(f"colorBy must be 'cluster', 'suspicion' or 'none', found {colorBy!r}.")
    allRows = tuple(range(len(caseIds)))
    if colorBy == "cluster":
        values = _column(sampleTable, caseIds, "cluster")
        if values is not None:
            clusters = np.array([int(float(v)) for v in values])
            names = dict(clusterNames or {})
            return [SampleGroup(names.get(c, f"cluster {c}"), CATEGORICAL[i % len(CATEGORICAL)],
                                tuple(int(r) for r in np.flatnonzero(clusters == c)))
                    for i, c in enumerate(sorted(set(clusters.tolist())))]
    if colorBy == "suspicion":
        values = _column(sampleTable, caseIds, "suspicion")
        if values is not None:
            scores = np.array([float(v) if v not in ("", None) else np.nan for v in values])
            finite = np.isfinite(scores)
            if finite.any():
                groups = []
                cuts = np.quantile(scores[finite], [b[0] for b in SUSPICION_BINS] + [1.0])
                for index, (low, high, color) in enumerate(SUSPICION_BINS):
                    inBin = finite & (scores >= cuts[index]) & (
                        scores <= cuts[index + 1] if index == len(SUSPICION_BINS) - 1 else scores < cuts[index + 1])
                    rows = tuple(int(r) for r in np.flatnonzero(inBin))
                    if rows:
                        label = "most suspicious 10%" if low == 0.9 else f"suspicion {int(low * 100)}-{int(high * 100)}%"
                        groups.append(SampleGroup(label, color, rows))
                missing = tuple(int(r) for r in np.flatnonzero(~finite))
                if missing:
                    groups.append(SampleGroup("no score", SINGLE_COLOR, missing))
                return groups
    return [SampleGroup("training samples", SINGLE_COLOR, allRows)]


#: Margin around the training samples, as a fraction of their extent, of the plot axes and the sliders.
RANGE_MARGIN = 0.25


def latentRange(points: np.ndarray, margin: float = RANGE_MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """Per-dimension ``(low, high)`` covering ``points`` [N, D] plus ``margin`` of their extent."""
    points = np.asarray(points, dtype=np.float64)
    low, high = points.min(0), points.max(0)
    span = np.maximum(high - low, 1e-3)
    return low - margin * span, high + margin * span


def layoutPlotViewNode(scene, chartNode=None):
    """The plot view node of the view layout that shows the map: mapped in the layout, not the
    module panel's own view, preferably already showing ``chartNode``; None when the layout has none."""
    mapped = []
    for index in range(scene.GetNumberOfNodesByClass("vtkMRMLPlotViewNode")):
        node = scene.GetNthNodeByClass(index, "vtkMRMLPlotViewNode")
        if node.IsMappedInLayout() and not (node.GetAttribute(ROLE_ATTRIBUTE) or "").startswith("plot-"):
            mapped.append(node)
    showing = [n for n in mapped if chartNode is not None and n.GetPlotChartNodeID() == chartNode.GetID()]
    return (showing or mapped or [None])[0]


class LatentMapPlot:
    """Creates and keeps the plot nodes of one latent map in a scene.

    Args:
        scene: the MRML scene.
        onProbeMoved: called (no arguments) whenever the probe table changes: a drag in the plot
            view, a spin box edit, :meth:`setProbe`.
    """

    def __init__(self, scene, onProbeMoved: Callable[[], None] | None = None, name: str = "HyperSORT") -> None:
        self.scene = scene
        self.name = name
        self.onProbeMoved = onProbeMoved
        self.caseIds: tuple[str, ...] = ()
        self.latents = np.zeros((0, 0))
        self.centres = np.zeros((0, 0))
        self.centreLabels: tuple[str, ...] = ()
        self.groups: list[SampleGroup] = []
        self.dimensions = (0, 1)
        self.sampleTables: list = []
        self.sampleSeries: list = []
        self.centreTable = None
        self.centreSeries = None
        self.probeTable = None
        self.probeSeries = None
        self.chartNode = None
        self.viewNode = None
        self._observations: list[tuple[object, int]] = []
        self._writing = False
        self.restoreCount = 0

    # ------------------------------------------------------------------ building
    @property
    def latentDim(self) -> int:
        return int(self.latents.shape[1]) if self.latents.ndim == 2 else 0

    def build(self, caseIds: Sequence[str], latents: np.ndarray, groups: Sequence[SampleGroup],
              probe: Sequence[float] | None = None, centres: np.ndarray | None = None,
              centreLabels: Sequence[str] = (), dimensions: tuple[int, int] = (0, 1)) -> None:
        """(Re)create the nodes for a run's latent table; nodes from an earlier build are removed."""
        latents = np.asarray(latents, dtype=np.float64)
        if latents.ndim != 2 or latents.shape[0] != len(caseIds):
            raise ValueError(f"Expected latents [N={len(caseIds)}, D], found shape {latents.shape}.")
        self.clear()
        self.caseIds = tuple(caseIds)
        self.latents = latents
        self.groups = list(groups)
        self.centres = np.zeros((0, latents.shape[1])) if centres is None else np.asarray(centres, np.float64)
        self.centreLabels = tuple(centreLabels) or tuple(f"centre {i}" for i in range(len(self.centres)))
        self.dimensions = self._checkDimensions(dimensions)
        probe = self.latents.mean(0) if probe is None else np.asarray(probe, dtype=np.float64)

        self.chartNode = self._addNode("vtkMRMLPlotChartNode", f"{self.name} latent map", "chart")
        self.chartNode.SetTitle("Latent map")
        self.chartNode.SetLegendVisibility(True)
        self.chartNode.SetGridVisibility(True)
        self.chartNode.SetEnablePointMoveAlongX(True)
        self.chartNode.SetEnablePointMoveAlongY(self.latentDim > 1)
        for group in self.groups:
            table = self._pointTable(f"{self.name} map: {group.name}", "samples",
                                     [self.caseIds[r] for r in group.rows], self.latents[list(group.rows)])
            series = self._series(f"{group.name} ({len(group.rows)})", table, "samples", group.color,
                                  "MarkerStyleCircle", 8)
            self.sampleTables.append(table)
            self.sampleSeries.append(series)
        if len(self.centres):
            self.centreTable = self._pointTable(f"{self.name} map: style centres", "centres", self.centreLabels,
                                                self.centres)
            self.centreSeries = self._series("style centres", self.centreTable, "centres", CENTRE_COLOR,
                                             "MarkerStyleSquare", 11)
        self.probeTable = self._pointTable(f"{self.name} map: probe", "probe", ["probe"], probe[None])
        self.probeSeries = self._series("probe", self.probeTable, "probe", PROBE_COLOR, "MarkerStyleDiamond", 16)

        self.viewNode = self._addNode("vtkMRMLPlotViewNode", f"{self.name} plot view", "view")
        self.viewNode.SetPlotChartNodeID(self.chartNode.GetID())
        # The panel's view shows this chart only: another module activating its chart in the
        # selection node must not replace it.
        self.viewNode.SetDoPropagatePlotChartSelection(False)
        self.viewNode.SetEnablePointMoveAlongX(True)
        self.viewNode.SetEnablePointMoveAlongY(self.latentDim > 1)
        self.setDragEnabled(True)
        self._updateAxes()

        for table in [*self.sampleTables, self.centreTable]:
            if table is not None:
                self._observe(table, self._onFixedTableModified)
        self._observe(self.probeTable, self._onProbeTableModified)

    def _checkDimensions(self, dimensions: tuple[int, int]) -> tuple[int, int]:
        dx, dy = (int(d) for d in dimensions)
        if self.latentDim == 1:
            return (0, 0)
        if not (0 <= dx < self.latentDim and 0 <= dy < self.latentDim) or dx == dy:
            raise ValueError(f"Plot dimensions must be two different indices in 0..{self.latentDim - 1}, "
                             f"found {dimensions}.")
        return (dx, dy)

    def _addNode(self, className: str, name: str, role: str):
        node = self.scene.AddNewNodeByClass(className, self.scene.GenerateUniqueName(name))
        node.SetAttribute(ROLE_ATTRIBUTE, f"plot-{role}")
        return node

    def _pointTable(self, name: str, role: str, labels: Sequence[str], points: np.ndarray):
        tableNode = self._addNode("vtkMRMLTableNode", name, role)
        table = vtk.vtkTable()
        labelArray = vtk.vtkStringArray()
        labelArray.SetName(LABEL_COLUMN)
        for label in labels:
            labelArray.InsertNextValue(str(label))
        table.AddColumn(labelArray)
        for dim in range(self.latentDim):
            table.AddColumn(self._doubleArray(columnName(dim), points[:, dim]))
        if self.latentDim == 1:
            table.AddColumn(self._doubleArray(BASELINE_COLUMN, np.zeros(len(points))))
        tableNode.SetAndObserveTable(table)
        tableNode.SetLocked(True)
        return tableNode

    @staticmethod
    def _doubleArray(name: str, values: np.ndarray) -> vtk.vtkDoubleArray:
        array = vtk.vtkDoubleArray()
        array.SetName(name)
        array.SetNumberOfTuples(len(values))
        for index, value in enumerate(values):
            array.SetValue(index, float(value))
        return array

    def _series(self, name: str, tableNode, role: str, color, markerStyle: str, markerSize: int):
        import slicer

        series = self._addNode("vtkMRMLPlotSeriesNode", name, f"{role}-series")
        series.SetName(name)
        series.SetAndObserveTableNodeID(tableNode.GetID())
        series.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
        series.SetLabelColumnName(LABEL_COLUMN)
        series.SetMarkerStyle(getattr(slicer.vtkMRMLPlotSeriesNode, markerStyle))
        series.SetMarkerSize(markerSize)
        series.SetLineStyle(slicer.vtkMRMLPlotSeriesNode.LineStyleNone)
        series.SetColor(*[float(c) for c in color])
        self.chartNode.AddAndObservePlotSeriesNodeID(series.GetID())
        return series

    def _updateAxes(self) -> None:
        dx, dy = self.dimensions
        xName = columnName(dx)
        yName = BASELINE_COLUMN if self.latentDim == 1 else columnName(dy)
        for series in self.allSeries():
            series.SetXColumnName(xName)
            series.SetYColumnName(yName)
        self.chartNode.SetXAxisTitle(xName)
        self.chartNode.SetYAxisTitle(yName)
        # Fixed ranges: the map must not rescale under the cursor while the probe is dragged.
        points = np.vstack([self.latents, self.centres]) if len(self.centres) else self.latents
        low, high = latentRange(points)
        self.chartNode.SetXAxisRangeAuto(False)
        self.chartNode.SetXAxisRange(float(low[dx]), float(high[dx]))
        self.chartNode.SetYAxisRangeAuto(False)
        self.chartNode.SetYAxisRange(*((-1.0, 1.0) if self.latentDim == 1 else (float(low[dy]), float(high[dy]))))

    def allSeries(self) -> list:
        return [s for s in [*self.sampleSeries, self.centreSeries, self.probeSeries] if s is not None]

    def allNodes(self) -> list:
        tables = [t for t in [*self.sampleTables, self.centreTable, self.probeTable] if t is not None]
        return [n for n in [*tables, *self.allSeries(), self.chartNode, self.viewNode] if n is not None]

    def setDimensions(self, dx: int, dy: int) -> None:
        """Show latent dimensions ``dx`` (horizontal) and ``dy`` (vertical), 0-based."""
        self.dimensions = self._checkDimensions((dx, dy))
        self._updateAxes()

    def setDragEnabled(self, enabled: bool) -> None:
        """MovePoints interaction (drag the probe) when enabled, point selection (click a sample) otherwise."""
        import slicer

        mode = (slicer.vtkMRMLPlotViewNode.InteractionModeMovePoints if enabled
                else slicer.vtkMRMLPlotViewNode.InteractionModeSelectPoints)
        self.viewNode.SetInteractionMode(mode)

    # ------------------------------------------------------------------ the probe
    def probe(self) -> np.ndarray:
        """The probe's latent point [D] as stored in its table (a drag edits the displayed dimensions)."""
        table = self.probeTable.GetTable()
        return np.array([table.GetColumnByName(columnName(d)).GetValue(0) for d in range(self.latentDim)])

    def setProbe(self, z: Sequence[float]) -> None:
        """Move the probe to ``z`` (all dimensions); fires one table modification."""
        z = np.asarray(z, dtype=np.float64).reshape(-1)
        if z.shape != (self.latentDim,):
            raise ValueError(f"The probe has {self.latentDim} coordinates, found {z.size}.")
        table = self.probeTable.GetTable()
        for dim, value in enumerate(z):
            table.GetColumnByName(columnName(dim)).SetValue(0, float(value))
        table.Modified()

    def _onProbeTableModified(self, caller=None, event=None) -> None:
        if self.onProbeMoved is not None and not self._writing:
            self.onProbeMoved()

    # ------------------------------------------------------------------ protecting the map
    def _expectedPoints(self, tableNode) -> np.ndarray:
        if tableNode is self.centreTable:
            return self.centres
        index = self.sampleTables.index(tableNode)
        return self.latents[list(self.groups[index].rows)]

    def _onFixedTableModified(self, caller=None, event=None) -> None:
        if self._writing or caller is None:
            return
        tableNode = next((t for t in [*self.sampleTables, self.centreTable] if t is caller), None)
        if tableNode is None:
            return
        expected = self._expectedPoints(tableNode)
        table = tableNode.GetTable()
        columns = [table.GetColumnByName(columnName(d)) for d in range(self.latentDim)]
        current = np.array([[c.GetValue(r) for c in columns] for r in range(table.GetNumberOfRows())])
        if current.shape == expected.shape and np.array_equal(current, expected):
            return
        self._writing = True
        try:
            for dim, column in enumerate(columns):
                for row in range(len(expected)):
                    column.SetValue(row, float(expected[row, dim]))
            table.Modified()
        finally:
            self._writing = False
        self.restoreCount += 1

    # ------------------------------------------------------------------ selection
    def caseIdAt(self, seriesNodeId: str, row: int) -> str | None:
        """The training case drawn at ``row`` of a series (from a plot view selection), else None."""
        for series, table in zip(self.sampleSeries, self.sampleTables):
            if series.GetID() == seriesNodeId:
                labels = table.GetTable().GetColumnByName(LABEL_COLUMN)
                return labels.GetValue(int(row)) if 0 <= int(row) < labels.GetNumberOfValues() else None
        return None

    def centreAt(self, seriesNodeId: str, row: int) -> int | None:
        """Index of the cluster centre drawn at ``row`` of the centres series, else None."""
        if self.centreSeries is not None and self.centreSeries.GetID() == seriesNodeId and 0 <= row < len(self.centres):
            return int(row)
        return None

    # ------------------------------------------------------------------ cleaning up
    def _observe(self, node, callback) -> None:
        tag = node.AddObserver(vtk.vtkCommand.ModifiedEvent, callback)
        self._observations.append((node, tag))

    def clear(self) -> None:
        """Remove the nodes of the current map from the scene."""
        nodes = self.allNodes()
        self.detach()
        for node in nodes:
            if self.scene.IsNodePresent(node):
                self.scene.RemoveNode(node)

    def detach(self) -> None:
        """Stop observing and forget the nodes, leaving them in the scene (e.g. when the scene closes)."""
        for node, tag in self._observations:
            node.RemoveObserver(tag)
        self._observations = []
        self.sampleTables, self.sampleSeries = [], []
        self.centreTable = self.centreSeries = self.probeTable = self.probeSeries = None
        self.chartNode = self.viewNode = None
