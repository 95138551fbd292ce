"""The review queue's part of the module panel (Slicer application only).

The queue and the verdicts are the Qt-free :class:`HyperSORTModule.ReviewLogic.ReviewLogic`
(``logic.review``); this class fills the table, shows the selected case and turns the verdict
buttons (Alt+1, Alt+2, Alt+3) into saved verdicts.
"""

from __future__ import annotations

import qt
import slicer


class ReviewPanel:
    """Wires the *Review suspects* section of the panel.

    Args:
        ui: the panel's widgets.
        logic: the module logic (``logic.review`` is the review logic).
        runLong: runs ``work(progress, cancel)`` with the panel's progress bar; None when it failed.
        setStatus: shows a status line.
        onChanged: called when the buttons' states may have changed.
    """

    def __init__(self, ui, logic, runLong, setStatus, onChanged) -> None:
        self.ui = ui
        self.logic = logic
        self.runLong = runLong
        self.setStatus = setStatus
        self.onChanged = onChanged
        self.reviewRows: list = []
        ui.startReviewButton.connect("clicked(bool)", self.onStartReview)
        ui.reviewClusterComboBox.connect("currentIndexChanged(int)", lambda index: self.fillReviewTable())
        ui.reviewTableWidget.connect("cellClicked(int,int)", self.onReviewRowClicked)
        ui.verdictCorrectButton.connect("clicked(bool)", lambda checked=False: self.onVerdict("correct"))
        ui.verdictWrongButton.connect("clicked(bool)", lambda checked=False: self.onVerdict("wrong"))
        ui.verdictStyleButton.connect("clicked(bool)", lambda checked=False: self.onVerdict("style"))

    def updateButtonStates(self, loaded: bool) -> None:
        self.ui.startReviewButton.enabled = loaded
        reviewing = self.logic.review.current is not None
        for button in (self.ui.verdictCorrectButton, self.ui.verdictWrongButton, self.ui.verdictStyleButton):
            button.enabled = reviewing

    def onStartReview(self) -> None:
        review = self.logic.review
        dataset = self.ui.reviewDatasetPathLineEdit.currentPath or None
        with slicer.util.tryWithErrorDisplay("Could not open the review.", waitCursor=True):
            session = review.start(self.ui.reviewerLineEdit.text, dataset=dataset)
            combo = self.ui.reviewClusterComboBox
            combo.blockSignals(True)
            combo.clear()
            combo.addItem("ranked suspects")
            names = self.logic.clusterNames()
            for cluster in session.clusters():
                combo.addItem(self.logic.styleNameOf(cluster, names))
            combo.blockSignals(False)
            self.fillReviewTable()
            nextCase = session.next_case()
            if nextCase is not None:
                self.showReviewCase(nextCase)
        self.onChanged()

    def fillReviewTable(self) -> None:
        review = self.logic.review
        if review.session is None:
            return
        index = self.ui.reviewClusterComboBox.currentIndex
        clusters = review.session.clusters()
        self.reviewRows = review.rows(cluster=clusters[index - 1] if 0 < index <= len(clusters) else None)
        table = self.ui.reviewTableWidget
        table.clear()
        table.setColumnCount(5)
        table.setHorizontalHeaderLabels(["rank", "case", "suspicion", "style", "verdict"])
        table.setRowCount(len(self.reviewRows))
        names = self.logic.clusterNames()
        for row, entry in enumerate(self.reviewRows):
            values = (str(entry.rank), entry.caseId, f"{entry.suspicion:.3f}", self.logic.styleNameOf(entry.cluster, names),
                      entry.verdict)
            for column, value in enumerate(values):
                item = qt.QTableWidgetItem(value)
                if entry.verdict:  # reviewed cases are greyed out
                    item.setForeground(qt.QBrush(qt.QColor("gray")))
                table.setItem(row, column, item)
        counts = review.session.counts()
        self.ui.reviewProgressLabel.text = (f"{counts['remaining']} to review; {counts['correct']} correct, "
                                            f"{counts['wrong']} wrong, {counts['style']} other style "
                                            f"(saved in {review.session.path}).")

    def onReviewRowClicked(self, row: int, column: int = 0) -> None:
        if 0 <= row < len(self.reviewRows):
            self.showReviewCase(self.reviewRows[row].caseId)

    def showReviewCase(self, caseId: str) -> None:
        shown = self.runLong(f"Could not show case {caseId}.",
                              lambda progress, cancel: self.logic.review.loadCase(caseId, progress, cancel))
        if shown is not None:
            slicer.util.setSliceViewerLayers(background=shown.volumeNode, label=None, fit=True)
            slicer.modules.markups.logic().JumpSlicesToLocation(*[float(v) for v in shown.focusRas], True)
            verdict = self.logic.review.session.verdict(caseId)
            self.ui.reviewNoteLineEdit.text = verdict.note if verdict else ""
            self.setStatus(f"Case {caseId}: label filled, main mode outlined; centred on their largest "
                           f"disagreement ({shown.disagreementVoxels} voxels).")
            for row, entry in enumerate(self.reviewRows):
                if entry.caseId == caseId:
                    self.ui.reviewTableWidget.selectRow(row)
        self.onChanged()

    def onVerdict(self, verdict: str) -> None:
        with slicer.util.tryWithErrorDisplay("Could not save the verdict.", waitCursor=False):
            nextCase = self.logic.review.record(verdict, self.ui.reviewNoteLineEdit.text)
            self.ui.reviewNoteLineEdit.text = ""
            self.fillReviewTable()
            if nextCase is not None:
                self.showReviewCase(nextCase)
            else:
                self.setStatus("Every suspect has a verdict; export with: hypersort export --run RUN --out DIR")
