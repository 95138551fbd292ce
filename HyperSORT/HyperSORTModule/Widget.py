"""GUI wiring of the HyperSORT module panel (Slicer application only).

Everything that computes lives in :class:`HyperSORTModule.CoreLogic.HyperSORTCoreLogic`; this
class connects widgets to it: buttons to logic calls, the plot view's selection to sample
picks, the latent sliders to the probe (and back), long work to a progress bar with Cancel,
errors to readable messages.
"""

from __future__ import annotations

import ctk
import numpy as np
import slicer
import vtk
from slicer.util import VTKObservationMixin

from HyperSORTModule.CoreLogic import LatentPoint
from HyperSORTModule.Errors import HyperSORTError, SegmentationCancelled
from HyperSORTModule.LatentMapPlot import latentRange, layoutPlotViewNode
from HyperSORTModule.LogicInterface import PanelLogic
from HyperSORTModule.QtSupport import BackgroundRunner, ProgressWithCancel


class HyperSORTPanel(VTKObservationMixin):
    """Connects the widgets of ``Resources/UI/HyperSORT.ui`` (``ui``) to ``logic`` and keeps the
    parameter node bound to them.

    Args:
        ui: the widgets by object name (``slicer.util.childWidgetVariables``).
        logic: the module logic (anything providing :class:`HyperSORTModule.LogicInterface.PanelLogic`).
    """

    def __init__(self, ui, logic: PanelLogic) -> None:
        VTKObservationMixin.__init__(self)
        self.ui = ui
        self.logic = logic
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self.points: list[LatentPoint] = []
        self.latentSliders: list = []
        self._updatingSliders = False
        self._layoutPlotView = None
        self._colorBy = None
        if not isinstance(getattr(logic, "runner", None), BackgroundRunner):
            logic.runner = BackgroundRunner()  # segmentations run beside the event loop: no frozen window
        self.progress = ProgressWithCancel(
            ui.progressBar, ui.cancelButton, logic.runner,
            busyWidgets=[ui.loadRunButton, ui.acceptButton, ui.compareButton, ui.goToPointButton],
            onMessage=lambda message: self.setStatus(message[-200:]))
        ui.progressBar.visible = False
        ui.cancelButton.visible = False
        logic.previewUpdated.connect(self.onPreviewUpdated)
        logic.backgroundError.connect(self.onBackgroundError)
        logic.probeChanged.connect(self.onProbeChanged)
        ui.loadRunButton.connect("clicked(bool)", self.onLoadRun)
        ui.clearCacheButton.connect("clicked(bool)", self.onClearCache)
        ui.acceptButton.connect("clicked(bool)", self.onAccept)
        ui.compareButton.connect("clicked(bool)", self.onCompare)
        ui.goToPointButton.connect("clicked(bool)", self.onGoToPoint)
        ui.showInLayoutButton.connect("clicked(bool)", self.onShowInLayout)
        ui.plotWidget.plotView().connect("dataSelected(vtkStringArray*, vtkCollection*)", self.onDataSelected)
        from HyperSORTModule.ReviewPanel import ReviewPanel

        self.review = ReviewPanel(ui, logic, self._runLong, self.setStatus, self.updateButtonStates)
        self.updateButtonStates()

    # ------------------------------------------------------------------ life cycle, parameter node
    def parameterNode(self):
        return self._parameterNode

    def enter(self) -> None:
        """The module is shown (or the scene was re-opened): bind the scene's parameter node."""
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.inputVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume and not firstVolume.IsA("vtkMRMLLabelMapVolumeNode"):
                self._parameterNode.inputVolume = firstVolume
        self.restoreProbe()

    def exit(self) -> None:
        """The module is hidden; a running job goes on (its result is written when it ends)."""
        self.setParameterNode(None)

    def sceneClosing(self) -> None:
        self.setParameterNode(None)
        self.logic.forgetNodes()  # cancels a running job: it writes nothing into the closing scene

    def cleanup(self) -> None:
        self.setParameterNode(None)
        self.removeObservers()
        self.logic.previewUpdated.disconnect(self.onPreviewUpdated)
        self.logic.backgroundError.disconnect(self.onBackgroundError)
        self.logic.probeChanged.disconnect(self.onProbeChanged)
        self.logic.previewDebouncer.cancel()
        self.logic.releaseDebouncer.cancel()

    def setParameterNode(self, parameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
        self._parameterNode = parameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.onParameterNodeModified)
            self.applyParameters()

    def onParameterNodeModified(self, caller=None, event=None) -> None:
        self.applyParameters()

    def restoreProbe(self) -> None:
        """Put the probe back where the scene's parameter node left it (a saved scene, re-entering)."""
        node = self._parameterNode
        plot = self.logic.plot
        segmenter = self.logic.segmenter
        if (node is None or segmenter is None or plot.probeTable is None or not node.latent
                or len(node.latent) != plot.latentDim or node.latentRun != str(segmenter.run_dir)
                or np.allclose(plot.probe(), node.latent)):  # already there: no new preview
            return
        with slicer.util.tryWithErrorDisplay("Could not restore the probe position.", waitCursor=False):
            self.logic.setProbe([float(v) for v in node.latent])

    # ------------------------------------------------------------------ parameter node -> logic
    def applyParameters(self) -> None:
        """Push the parameter node's settings to the logic (called when the node changes)."""
        node = self.parameterNode()
        if node is None:
            return
        logic = self.logic
        logic.previewEnabled = bool(node.livePreview)
        logic.previewFullResolution = bool(node.previewFullResolution)
        logic.updateSegmentationOnRelease = bool(node.updateOnRelease)
        if node.inputVolume is not logic.inputVolumeNode:
            logic.setInputVolume(node.inputVolume)
            if node.inputVolume is not None:
                slicer.util.setSliceViewerLayers(background=node.inputVolume, fit=True)
        if logic.segmenter is not None:
            with slicer.util.tryWithErrorDisplay("Invalid preview spacing.", waitCursor=False):
                logic.setPreviewSpacing(node.previewSpacing)
            plot = logic.plot
            if plot.viewNode is not None:
                plot.setDragEnabled(bool(node.dragProbe))
                if self._layoutPlotView is not None:
                    self._layoutPlotView.SetInteractionMode(plot.viewNode.GetInteractionMode())
                dims = (int(node.xDimension), int(node.yDimension))
                if plot.latentDim > 1 and dims != plot.dimensions:
                    if dims[0] != dims[1] and max(dims) < plot.latentDim:
                        plot.setDimensions(*dims)
                    else:  # passing through an invalid pair while stepping a spin box is not an error
                        self.setStatus(f"Choose two different latent dimensions between 0 and {plot.latentDim - 1}.")
                if self._colorBy is not None and node.colorBy != self._colorBy:
                    self.rebuildMap()
                self._colorBy = node.colorBy
        self.updateButtonStates()

    def updateButtonStates(self) -> None:
        loaded = self.logic.segmenter is not None
        node = self.parameterNode()
        hasVolume = node is not None and node.inputVolume is not None
        self.ui.acceptButton.enabled = loaded and hasVolume
        self.ui.compareButton.enabled = loaded and hasVolume
        self.ui.goToPointButton.enabled = loaded
        self.ui.showInLayoutButton.enabled = loaded
        self.ui.clearCacheButton.enabled = loaded
        if hasattr(self, "review"):
            self.review.updateButtonStates(loaded)

    # ------------------------------------------------------------------ run loading
    def onLoadRun(self) -> None:
        node = self.parameterNode()
        # The parameter node's path starts as Path() ("."): that is "no run selected", not the current folder.
        if node is None or str(node.runDirectory or "") in ("", "."):
            slicer.util.errorDisplay("Choose the run directory written by 'hypersort train' first.")
            return
        from HyperSORTModule import InstallLogic

        def work(progress, cancel):
            # Dialogs stay in the GUI thread; pip and reading the weights run beside the event loop.
            InstallLogic.ensureDependencies(askConfirmation=True, onOutput=self.progress.note,
                                            runner=self.logic.runner)
            self.setStatus("Loading the run...")
            return self.logic.loadRun(node.runDirectory, device=node.device)

        self.progress.indeterminate = True
        segmenter = self._runLong("Could not load the run.", work)
        if segmenter is not None:
            with slicer.util.tryWithErrorDisplay("Could not show the latent map.", waitCursor=True):
                self.rebuildMap()
                self.restoreProbe()
                self.setStatus(f"Loaded {segmenter.run_dir.name}: {len(segmenter.case_ids)} training samples, "
                               f"{segmenter.latent_dim}-D latent space, classes "
                               f"{', '.join(segmenter.class_names[1:])}, device {segmenter.device}.")
                self.ui.runInfoLabel.text = self.ui.statusLabel.text
                if getattr(self.logic, "lastWarning", None):
                    self.setStatus(f"{self.logic.lastWarning} The map shows clusters of the current latent table.",
                                   error=True)
        self.updateButtonStates()

    def rebuildMap(self) -> None:
        node = self.parameterNode()
        segmenter = self.logic.segmenter
        if segmenter is None:
            return
        dims = (int(node.xDimension), int(node.yDimension)) if node is not None else (0, 1)
        if segmenter.latent_dim > 1 and (max(dims) >= segmenter.latent_dim or dims[0] == dims[1]):
            dims = (0, 1)
        plot = self.logic.buildLatentMap(colorBy=node.colorBy if node is not None else "cluster", dimensions=dims)
        self._colorBy = node.colorBy if node is not None else None
        plot.setDragEnabled(bool(node.dragProbe) if node is not None else True)
        self.ui.plotWidget.setMRMLPlotViewNode(plot.viewNode)
        self.ui.xDimensionSpinBox.maximum = max(0, segmenter.latent_dim - 1)
        self.ui.yDimensionSpinBox.maximum = max(0, segmenter.latent_dim - 1)
        self.buildLatentSliders()
        self.fillPointLists()

    def onClearCache(self) -> None:
        self.logic.clearCache(releaseGPU=True)
        self.setStatus("Cache cleared: preprocessed volumes and decoded UNets released (GPU memory freed).")

    # ------------------------------------------------------------------ latent points
    def fillPointLists(self) -> None:
        self.points = self.logic.latentPoints()
        labels = [point.label for point in self.points]
        for combo in (self.ui.pointComboBox, self.ui.compareAComboBox, self.ui.compareBComboBox):
            combo.clear()
            combo.addItems(labels)
        self.ui.compareBComboBox.currentIndex = self._defaultComparison()

    def _defaultComparison(self) -> int:
        """The most suspicious sample when the run has an analysis, else the second cluster, else 1."""
        table = self.logic.segmenter.sample_table()
        if table and "suspicion" in table and "case_id" in table:
            scores = [float(s) if s not in ("", None) else -np.inf for s in table["suspicion"]]
            worst = table["case_id"][int(np.argmax(scores))]
            for index, point in enumerate(self.points):
                if point.kind == "sample" and point.label == worst:
                    return index
        clusters = [i for i, p in enumerate(self.points) if p.kind == "cluster" and "main" not in p.label]
        return clusters[0] if clusters else min(1, len(self.points) - 1)

    def onGoToPoint(self) -> None:
        index = self.ui.pointComboBox.currentIndex
        if 0 <= index < len(self.points):
            with slicer.util.tryWithErrorDisplay("Could not segment this point.", waitCursor=True):
                self.logic.pickPoint(self.points[index])

    def onDataSelected(self, seriesIds, selections) -> None:
        """A click (or rectangle selection) in the plot view: segment the first sample or centre hit."""
        plot = self.logic.plot
        for index in range(seriesIds.GetNumberOfValues()):
            rows = selections.GetItemAsObject(index)
            if rows is None or rows.GetNumberOfTuples() == 0:
                continue
            seriesId, row = seriesIds.GetValue(index), int(rows.GetValue(0))
            case = plot.caseIdAt(seriesId, row)
            centre = plot.centreAt(seriesId, row)
            point = (self.logic.samplePoint(case) if case is not None
                     else self.logic.clusterPoints()[centre] if centre is not None else None)
            if point is not None:
                with slicer.util.tryWithErrorDisplay(f"Could not segment {point.label}.", waitCursor=True):
                    self.logic.pickPoint(point)
                    self.setStatus(f"Segmented with the UNet of {point.describe()}.")
                return

    # ------------------------------------------------------------------ latent sliders <-> probe
    def buildLatentSliders(self) -> None:
        layout = self.ui.latentCoordinatesWidget.layout()
        while layout.rowCount() > 0:
            layout.removeRow(0)  # deletes the row's label and slider
        self.latentSliders = []
        latents = self.logic.segmenter.latents
        probe = self.logic.plot.probe()
        low, high = latentRange(latents)  # the plot's axis ranges: the probe stays on the map
        for dim in range(latents.shape[1]):
            slider = ctk.ctkSliderWidget()
            slider.decimals = 4
            slider.minimum = float(min(low[dim], probe[dim]))
            slider.maximum = float(max(high[dim], probe[dim]))
            slider.singleStep = float((high[dim] - low[dim]) / 300.0)
            slider.value = float(probe[dim])
            slider.setToolTip(f"Latent coordinate z{dim + 1} of the probe")
            slider.connect("valueChanged(double)", self.onLatentSliderChanged)
            layout.addRow(f"z{dim + 1}:", slider)
            self.latentSliders.append(slider)

    def onLatentSliderChanged(self, value=None) -> None:
        if self._updatingSliders or not self.latentSliders:
            return
        with slicer.util.tryWithErrorDisplay("Invalid latent point.", waitCursor=False):
            self.logic.setProbe([slider.value for slider in self.latentSliders])

    def onProbeChanged(self, z) -> None:
        """The probe moved (drag or slider): show its coordinates, remember them in the parameter node."""
        self._updatingSliders = True
        try:
            for slider, value in zip(self.latentSliders, z):
                if abs(slider.value - value) > 1e-9:
                    slider.value = float(value)
        finally:
            self._updatingSliders = False
        node = self.parameterNode()
        if node is not None and self.logic.segmenter is not None:
            node.latent = [float(v) for v in z]
            node.latentRun = str(self.logic.segmenter.run_dir)

    # ------------------------------------------------------------------ logic notifications
    def onPreviewUpdated(self, labelmapNode, point) -> None:
        node = self.parameterNode()
        if node is not None:
            node.previewLabelmap = labelmapNode
        timings = self.logic.lastTimings
        self.setStatus(f"Preview of {point.describe()}: {timings.get('logic', 0.0) * 1000:.0f} ms "
                       f"(UNet {timings.get('unet', 0.0) * 1000:.0f} ms).")

    def onBackgroundError(self, message: str) -> None:
        self.setStatus(message, error=True)

    def setStatus(self, message: str, error: bool = False) -> None:
        self.ui.statusLabel.text = message
        self.ui.statusLabel.setStyleSheet("color: #b00020;" if error else "")
        slicer.util.showStatusMessage(message, 5000)

    # ------------------------------------------------------------------ long work
    def _runLong(self, title: str, work):
        """Run ``work(progress, cancel)`` with progress, Cancel and readable errors; None if it failed."""
        try:
            with self.progress:
                return work(self.progress.progress, self.progress.cancel)
        except SegmentationCancelled as error:
            self.setStatus(str(error))
        except HyperSORTError as error:
            slicer.util.errorDisplay(f"{title}\n\n{error}")
        except Exception as error:  # unexpected: show it, with details, instead of a silent failure
            import traceback

            slicer.util.errorDisplay(f"{title}\n\n{error}", detailedText=traceback.format_exc())
        return None

    def onAccept(self) -> None:
        node = self.parameterNode()
        point = self.logic.probePoint()
        result = self._runLong(f"Could not segment {point.label} at full resolution.",
                               lambda progress, cancel: self.logic.acceptSegmentation(
                                   point, progress, cancel, segmentationNode=node.outputSegmentation))
        if result is not None:
            node.outputSegmentation = result
            self.setStatus(f"'{result.GetName()}': full-resolution segmentation of {point.describe()}.")

    def onCompare(self) -> None:
        a, b = self.ui.compareAComboBox.currentIndex, self.ui.compareBComboBox.currentIndex
        if not (0 <= a < len(self.points) and 0 <= b < len(self.points)) or a == b:
            slicer.util.errorDisplay("Choose two different latent points to compare.")
            return
        pointA, pointB = self.points[a], self.points[b]
        result = self._runLong(f"Could not compare {pointA.label} and {pointB.label}.",
                               lambda progress, cancel: self.logic.compare(pointA, pointB, progress, cancel))
        if result is None:
            return
        nodeA, nodeB, summary = result
        rows = "".join(f"<tr><td>{r.name}</td><td>{r.dice:.3f}</td><td>{r.volumeA_ml:.1f}</td>"
                       f"<td>{r.volumeB_ml:.1f}</td></tr>" for r in summary)
        self.ui.compareResultLabel.text = (
            f"<b>A</b> = {nodeA.GetName()} (filled), <b>B</b> = {nodeB.GetName()} (outline)"
            f"<table><tr><th>class</th><th>Dice</th><th>A (ml)</th><th>B (ml)</th></tr>{rows}</table>")

    # ------------------------------------------------------------------ layout
    def onShowInLayout(self) -> None:
        """Show the map in the view layout too (larger than the panel), with the same interaction."""
        plot = self.logic.plot
        if plot.chartNode is None:
            return
        slicer.modules.plots.logic().ShowChartInLayout(plot.chartNode)
        layoutManager = slicer.app.layoutManager()
        viewNode = layoutPlotViewNode(slicer.mrmlScene, plot.chartNode)
        if layoutManager is None or viewNode is None:
            return
        widgets = [layoutManager.plotWidget(i) for i in range(layoutManager.plotViewCount)]
        plotWidget = next((w for w in widgets if w.mrmlPlotViewNode() is viewNode), None)
        if plotWidget is None:
            return
        viewNode.SetPlotChartNodeID(plot.chartNode.GetID())
        viewNode.SetEnablePointMoveAlongX(True)
        viewNode.SetEnablePointMoveAlongY(plot.latentDim > 1)
        viewNode.SetInteractionMode(plot.viewNode.GetInteractionMode())
        if self._layoutPlotView is not viewNode:
            plotWidget.plotView().connect("dataSelected(vtkStringArray*, vtkCollection*)", self.onDataSelected)
            self._layoutPlotView = viewNode
