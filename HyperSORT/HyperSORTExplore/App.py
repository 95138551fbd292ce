"""The explorer's web page (trame, Vuetify 3) on trame-slicer's remote slice views.

Left: the scan (open by path, window / level presets), the latent map as an SVG chart (training
samples coloured by style or suspicion, hover names the case, click a sample or a style centre to
segment, drag the probe; sliders per latent coordinate), Accept, and the review queue. Right:
Slicer's axial, coronal and sagittal slice views of the scan with the segmentation as label layer,
rendered on the server (VTK, real MRML scene) and streamed as images.

Every handler reports failures as a readable message in the page (``state.error``); nothing here
computes: :class:`HyperSORTExplore.ExploreLogic.ExploreLogic` does.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from pathlib import Path

from HyperSORTExplore.Access import AccessPolicy
from HyperSORTExplore.ExploreLogic import WINDOW_PRESETS, ExploreLogic
from HyperSORTExplore.Scheduling import AsyncioScheduler
from HyperSORTModule.Errors import HyperSORTError

#: The latent-map chart, in CSS pixels.
CHART_WIDTH, CHART_HEIGHT, CHART_PAD = 380, 260, 22

#: What hovering a sample and a style centre says (JavaScript expressions over ``s`` / ``c``).
SAMPLE_HOVER = ("s.id + (s.style ? ' · ' + s.style : '') + (s.description ? ': ' + s.description : '')"
                " + (s.suspicion !== '' ? ' · suspicion ' + Number(s.suspicion).toFixed(2) : '')")
CENTRE_HOVER = "'centre of ' + c.label + (c.description ? ': ' + c.description : '')"


def _reraise(error: BaseException):
    raise error


def _readable(error: BaseException) -> str:
    if isinstance(error, HyperSORTError):
        return str(error)
    return f"Unexpected error ({type(error).__name__}): {error}. The server log has the details."


class ExploreApp:
    """The trame application of ``hypersort explore``.

    Args:
        run: the trained run directory.
        policy: the folders the server may read below.
        scan: a scan to open at start (optional; the page can open one by path).
        dataset: the training data folder, for the review (default: the one the run records).
        device: where the UNets run.
        previewDelayMs: a probe move is previewed this long after the first move of a burst.
        server: a trame server (a new one by default).
    """

    def __init__(self, run: Path, policy: AccessPolicy, scan: Path | None = None, dataset: Path | None = None,
                 device: str = "auto", previewDelayMs: float = 150, server=None) -> None:
        from trame.app import get_server
        from trame_slicer import module as trameSlicerModule
        from trame_slicer.core import LayoutManager, SlicerApp
        from trame_slicer.rca_view import register_rca_factories
        from trame_slicer.views import Layout, LayoutDirection, ViewLayoutDefinition

        from HyperSORTModule.StandaloneScene import registerSegmentationConverters

        self.server = server or get_server(None, client_type="vue3")
        self.server.enable_module(trameSlicerModule)
        self.state = self.server.state
        self.slicerApp = SlicerApp()
        registerSegmentationConverters()
        register_rca_factories(self.slicerApp.view_manager, self.server)
        self.layoutManager = LayoutManager(self.slicerApp.scene, self.slicerApp.view_manager, self.server)
        views = Layout(LayoutDirection.Horizontal,
                       [ViewLayoutDefinition.axial_view(),
                        Layout(LayoutDirection.Vertical,
                               [ViewLayoutDefinition.coronal_view(), ViewLayoutDefinition.sagittal_view()])],
                       flex_sizes=["2", "1"])
        self.layoutManager.register_layout("explore", views)
        self.layoutManager.set_layout("explore")

        self.logic = ExploreLogic(self.slicerApp.scene, policy, AsyncioScheduler(onFired=self._afterDebounced),
                                  device=device, previewDelayMs=previewDelayMs)
        self.logic.dataset = dataset
        self.logic.core.backgroundError.connect(self._showError)
        self.logic.loadRun(run)
        self.map = self.logic.mapData()
        self._initState(run, scan)
        self._buildUi()
        self._bindState()
        if scan is not None:
            self._guard("Opening the scan", lambda: self._openScan(str(scan)))

    # ------------------------------------------------------------------ state
    def _initState(self, run: Path, scan: Path | None) -> None:
        state, m = self.state, self.map
        state.trame__title = "HyperSORT explore"
        state.update({
            "run_name": str(run), "scan_path": str(scan or ""), "scan_name": "", "error": "", "info": "",
            "busy": False, "busy_text": "", "busy_percent": None, "wl_preset": "auto", "wl_presets": ["auto", *WINDOW_PRESETS],
            "map_samples": self._chartSamples(), "map_centres": self._chartCentres(), "map_groups": m["groups"],
            "map_lo": m["low"], "map_hi": m["high"], "map_audited": m["audited"], "hovered": "", "dragging": False,
            "preview": self.logic.previewSummary(), "accepted": [], "reviewer": "", "review_rows": [],
            "review_case": "", "review_note": "", "review_started": False, "color_by": "cluster",
            "probe_ms": 0.0,
        })
        for d, value in enumerate(m["probe"]):
            state[f"z_{d}"] = float(value)  # exact: the page echoes it back unchanged

    def _px(self, z: list[float]) -> tuple[float, float]:
        m = self.map
        lo, hi = m["low"], m["high"]
        y = z[1] if len(z) > 1 else 0.0
        loY, hiY = (lo[1], hi[1]) if len(z) > 1 else (-1.0, 1.0)
        cx = CHART_PAD + (z[0] - lo[0]) / (hi[0] - lo[0]) * (CHART_WIDTH - 2 * CHART_PAD)
        cy = CHART_HEIGHT - CHART_PAD - (y - loY) / (hiY - loY) * (CHART_HEIGHT - 2 * CHART_PAD)
        return round(cx, 2), round(cy, 2)

    def _chartSamples(self) -> list[dict]:
        return [{**s, "cx": self._px(s["z"])[0], "cy": self._px(s["z"])[1]} for s in self.map["samples"]]

    def _chartCentres(self) -> list[dict]:
        return [{**c, "cx": self._px(c["z"])[0], "cy": self._px(c["z"])[1]} for c in self.map["centres"]]

    def _pushProbeAndPreview(self) -> None:
        for d, value in enumerate(self.logic.core.plot.probe()):
            self.state[f"z_{d}"] = float(value)
        self.state.preview = self.logic.previewSummary()

    def _afterDebounced(self) -> None:
        """A debounced preview ran on the event loop: send its summary to the page."""
        with self.state:
            self.state.preview = self.logic.previewSummary()
            if self._moveStarted is not None:
                self.state.probe_ms = round(1000 * (time.perf_counter() - self._moveStarted), 1)
                self._moveStarted = None

    def _showError(self, message: str) -> None:
        with self.state:
            self.state.error = message

    def _guard(self, what: str, action):
        """Run a handler; a failure becomes the page's error message (and the log's traceback)."""
        try:
            result = action()
            self.state.error = ""
            return result
        except Exception as error:  # the page must show every failure
            if not isinstance(error, HyperSORTError):
                logging.exception("HyperSORT explore: %s failed", what)
            self.state.error = f"{what}: {_readable(error)}"
            return None

    async def _long(self, what: str, action, background=None) -> None:
        """A long computation: the page shows a progress bar first, then the result or the error.

        ``background(progress)``, if given, runs first in a worker thread while the event loop keeps
        serving, and reports its finished fraction through ``progress``: the bar shows the percentage.
        ``action`` then runs on the event loop (it may touch the scene)."""
        loop = asyncio.get_running_loop()
        with self.state:
            self.state.busy, self.state.busy_text, self.state.error = True, f"{what}…", ""
            self.state.busy_percent = None if background is None else 0
        await asyncio.sleep(0.05)  # lets the page draw the progress bar before the event loop is busy
        try:
            if background is not None:
                def progress(fraction: float) -> None:  # called in the worker thread
                    loop.call_soon_threadsafe(self._showProgress, fraction)

                try:
                    await loop.run_in_executor(None, background, progress)
                except Exception as error:  # shown like a failure of the action
                    with self.state:
                        self._guard(what, functools.partial(_reraise, error))
                    return
            with self.state:
                self.state.busy_percent = None if background is None else 100
                self._guard(what, action)
        finally:
            with self.state:
                self.state.busy, self.state.busy_percent = False, None

    def _showProgress(self, fraction: float) -> None:
        percent = int(max(0.0, min(1.0, float(fraction))) * 100)
        if self.state.busy and percent != self.state.busy_percent:
            with self.state:
                self.state.busy_percent = percent

    # ------------------------------------------------------------------ handlers
    def _openScan(self, path: str) -> None:
        node = self.logic.openScan(path)
        self._fitViews()
        self.state.scan_name = node.GetName()
        self.state.scan_path = str(self.logic.scanPath)
        self.state.preview = self.logic.previewSummary()
        self.state.review_case = ""

    def _fitViews(self) -> None:
        for view in self.slicerApp.view_manager.get_slice_views():
            view.fit_view_to_content()

    def onOpenScan(self) -> None:
        self._guard("Opening the scan", lambda: self._openScan(self.state.scan_path))

    def onPickSample(self, caseId: str) -> None:
        def pick():
            self.logic.pickSample(caseId)
            self._pushProbeAndPreview()
            self.state.review_case = ""
        self._guard(f"Segmenting with sample {caseId}", pick)

    def onPickCentre(self, index: int) -> None:
        def pick():
            self.logic.pickCentre(int(index))
            self._pushProbeAndPreview()
            self.state.review_case = ""
        self._guard(f"Segmenting with style centre {index}", pick)

    def onProbeChanged(self, **_) -> None:
        z = [float(self.state[f"z_{d}"]) for d in range(self.map["dim"])]

        def move():
            if self.logic.moveProbe(z):
                self._moveStarted = self._moveStarted or time.perf_counter()
                self.state.review_case = ""
        self._guard("Moving the probe", move)

    def onWindowPreset(self, wl_preset, **_) -> None:
        self._guard("Window / level", lambda: self.logic.setWindowPreset(wl_preset))

    def onColorBy(self, color_by, **_) -> None:
        def recolour():
            self.map = self.logic.mapData(colorBy=color_by)
            self.state.map_samples, self.state.map_groups = self._chartSamples(), self.map["groups"]
        self._guard("Colouring the latent map", recolour)

    async def onAccept(self) -> None:
        what = "Accepting the full-resolution segmentation"
        point = self._guard(what, self.logic.acceptPoint)
        if point is None:
            return

        def accept():
            files = self.logic.accept(point=point)
            self.state.accepted = [*self.state.accepted,
                                   {"nifti": str(files.nifti), "seg": str(files.segmentation), "point": files.point}]
            self.state.info = f"Wrote {files.nifti.name} and {files.segmentation.name} next to the scan."
        await self._long(what, accept, background=functools.partial(self.logic.computeFullResolution, point))

    def onStartReview(self) -> None:
        def start():
            self.logic.startReview(self.state.reviewer)
            self.state.review_rows = self.logic.reviewRows()
            self.state.review_started = True
        self._guard("Starting the review", start)

    async def onOpenReviewCase(self, caseId: str) -> None:
        def open_():
            self.logic.openReviewCase(caseId)
            self._fitViews()
            self.state.review_case = caseId
            self.state.review_note = ""
        await self._long(f"Opening training case {caseId}", open_)

    def onVerdict(self, verdict: str) -> None:
        def record():
            following = self.logic.recordVerdict(verdict, self.state.review_note or "")
            self.state.review_rows = self.logic.reviewRows()
            self.state.info = (f"Saved '{verdict}' for {self.state.review_case} to review.csv."
                               + (f" Next unreviewed: {following}." if following else ""))
        self._guard("Saving the verdict", record)

    def onBackToScan(self) -> None:
        def back():
            self.logic.showScan()
            self._fitViews()
            self.state.review_case = ""
        self._guard("Showing the scan", back)

    def _bindState(self) -> None:
        self._moveStarted = None
        self.state.change(*[f"z_{d}" for d in range(self.map["dim"])])(self.onProbeChanged)
        self.state.change("wl_preset")(self.onWindowPreset)
        self.state.change("color_by")(self.onColorBy)

    # ------------------------------------------------------------------ the page
    def _buildUi(self) -> None:
        from trame.ui.vuetify3 import SinglePageWithDrawerLayout
        from trame.widgets import html
        from trame.widgets import vuetify3 as v3

        with SinglePageWithDrawerLayout(self.server, full_height=True) as layout:
            self.layout = layout
            layout.title.set_text("HyperSORT explore")
            with layout.toolbar:
                v3.VSpacer()
                html.Div("{{ run_name }} · {{ scan_name }}", classes="text-caption mr-4", id="run-caption")
            with layout.drawer as drawer:
                drawer.width = 440
                with html.Div(classes="pa-2", style="font-size: 13px"):
                    v3.VProgressLinear(v_if="busy", indeterminate=("busy_percent === null",),
                                       model_value=("busy_percent || 0",), color="primary", id="busy")
                    html.Div("{{ busy_text }}{{ busy_percent === null ? '' : ' ' + busy_percent + '%' }}", v_if="busy",
                             classes="text-caption", id="busy-text")
                    v3.VAlert(v_if="error", type="error", density="compact", text=("error",), id="error",
                              closable=True, click_close="error = ''", classes="mb-2")
                    v3.VAlert(v_if="info && !error", type="success", density="compact", text=("info",), id="info",
                              classes="mb-2")
                    self._scanUi(v3, html)
                    self._chartUi(v3, html)
                    self._acceptUi(v3, html)
                    self._reviewUi(v3, html)
            with layout.content:
                # below the app bar (64 px) and above trame's footer (24 px); v-main's padding keeps it
                # beside the drawer
                with html.Div(style="width: 100%; height: calc(100vh - 88px); display: flex;", id="views"):
                    self.layoutManager.initialize_layout_grid(layout)

    def _scanUi(self, v3, html) -> None:
        with html.Div(classes="d-flex align-center"):
            v3.VTextField(v_model=("scan_path",), label="Scan on the server (NIfTI)", density="compact",
                          hide_details=True, id="scan-path")
            v3.VBtn("Open", click=self.onOpenScan, size="small", classes="ml-2", id="open-scan")
        v3.VSelect(v_model=("wl_preset",), items=("wl_presets",), label="Window / level", density="compact",
                   hide_details=True, classes="mt-2", id="wl-preset")

    def _chartUi(self, v3, html) -> None:
        from trame_client.widgets.core import HtmlElement

        dim = self.map["dim"]
        inner_w, inner_h = CHART_WIDTH - 2 * CHART_PAD, CHART_HEIGHT - 2 * CHART_PAD
        y = "z_1" if dim > 1 else "0"
        lo1, hi1 = ("map_lo[1]", "map_hi[1]") if dim > 1 else ("-1", "1")
        probe_cx = f"{CHART_PAD} + (z_0 - map_lo[0]) / (map_hi[0] - map_lo[0]) * {inner_w}"
        probe_cy = f"{CHART_HEIGHT - CHART_PAD} - ({y} - {lo1}) / ({hi1} - {lo1}) * {inner_h}"
        px = "($event.clientX - $event.currentTarget.getBoundingClientRect().left)"
        py = "($event.clientY - $event.currentTarget.getBoundingClientRect().top)"
        to_z0 = f"Math.round(1e5 * (map_lo[0] + ({px} - {CHART_PAD}) / {inner_w} * (map_hi[0] - map_lo[0]))) / 1e5"
        to_z1 = (f"Math.round(1e5 * (map_lo[1] + ({CHART_HEIGHT - CHART_PAD} - {py}) / {inner_h} * "
                 "(map_hi[1] - map_lo[1]))) / 1e5")
        move = f"dragging && (z_0 = {to_z0}" + (f", z_1 = {to_z1})" if dim > 1 else ")")
        with html.Div(classes="d-flex align-center mt-3"):
            html.Div("Latent map", classes="text-subtitle-2")
            v3.VSpacer()
            with v3.VBtnToggle(v_model=("color_by",), density="compact", mandatory=True, id="color-by"):
                v3.VBtn("styles", value="cluster", size="x-small")
                v3.VBtn("suspicion", value="suspicion", size="x-small")
        with html.Svg(width=CHART_WIDTH, height=CHART_HEIGHT, id="latent-map",
                      style="background: #fafafa; border: 1px solid #ddd; user-select: none; touch-action: none",
                      mousemove=move, mouseup="dragging = false", mouseleave="dragging = false",
                      __properties=["width", "height"]):
            HtmlElement("rect", x=CHART_PAD, y=CHART_PAD, width=inner_w, height=inner_h, fill="none",
                        stroke="#e4e4e4", __properties=["x", "y", "width", "height", "fill", "stroke"])
            with HtmlElement("circle", v_for="s in map_samples", key=("s.id",), cx=("s.cx",), cy=("s.cy",), r=6,
                             fill=("s.color",), stroke="white", style="cursor: pointer",
                             click=(self.onPickSample, "[s.id]"), mouseenter=f"hovered = {SAMPLE_HOVER}",
                             mouseleave="hovered = ''", data_case=("s.id",), classes="sample",
                             __properties=["cx", "cy", "r", "fill", "stroke", ("data_case", "data-case")],
                             __events=["click", "mouseenter", "mouseleave"]):
                HtmlElement("title", v_text=SAMPLE_HOVER)
            with HtmlElement("rect", v_for="c in map_centres", key=("c.index",), x=("c.cx - 7",), y=("c.cy - 7",),
                             width=14, height=14, fill="none", stroke="#444", stroke_width=2,
                             transform=("`rotate(45 ${c.cx} ${c.cy})`",), style="cursor: pointer",
                             click=(self.onPickCentre, "[c.index]"), mouseenter=f"hovered = {CENTRE_HOVER}",
                             mouseleave="hovered = ''", classes="centre", data_centre=("c.index",),
                             __properties=["x", "y", "width", "height", "fill", "stroke", "transform",
                                           ("stroke_width", "stroke-width"), ("data_centre", "data-centre")],
                             __events=["click", "mouseenter", "mouseleave"]):
                HtmlElement("title", v_text=CENTRE_HOVER)
            HtmlElement("circle", cx=(probe_cx,), cy=(probe_cy,), r=8, fill="rgba(0,0,0,0.15)", stroke="black",
                        stroke_width=2, style="cursor: grab", mousedown="dragging = true; $event.preventDefault()",
                        id="probe", __properties=["cx", "cy", "r", "fill", "stroke", ("stroke_width", "stroke-width")],
                        __events=["mousedown"])
        html.Div("{{ hovered || 'hover a point for its case and style; click it to segment the scan as it does; "
                 "drag the probe (or click a style centre, a diamond)' }}",
                 classes="text-caption", style="min-height: 2.6em; line-height: 1.3em", id="hovered")
        with html.Div(id="legend", style="line-height: 1.35em"):
            with html.Div(v_for="g in map_groups", key=("g.name",), classes="text-caption legend-item"):
                html.Span("&#9679;", style=("{color: g.color}",))
                html.B(" {{ g.name }}")
                html.Span("{{ g.description ? ': ' + g.description : '' }}", style="color: #555")
            html.Div("Styles are groups of cases whose UNets segment alike; isolated groups are too small to "
                     "be a style (candidate errors).", v_if="map_audited && color_by === 'cluster'",
                     classes="text-caption", style="color: #777")
            html.Div("This run has no audit: the colours are clusters of its latent table; "
                     "'hypersort analyze' names its styles.", v_if="!map_audited && color_by === 'cluster'",
                     classes="text-caption", style="color: #777")
        for d in range(dim):
            v3.VSlider(v_model=(f"z_{d}",), min=(f"map_lo[{d}]",), max=(f"map_hi[{d}]",),
                       step=(f"(map_hi[{d}] - map_lo[{d}]) / 200",), label=f"z{d + 1}", density="compact",
                       hide_details=True, thumb_label=True, id=f"slider-z{d + 1}")
        html.Div("Preview #{{ preview.count }}: {{ preview.point || '(none yet)' }} "
                 "{{ preview.latent && preview.latent.length ? '[' + preview.latent.map(v => v.toFixed(4)).join(', ') + ']' : '' }}"
                 " · {{ preview.ms }} ms",
                 classes="text-caption", id="preview-status")
        html.Div("{{ JSON.stringify(preview) }}", style="display: none", id="preview-json")
        html.Div("{{ JSON.stringify([%s]) }}" % ", ".join(f"z_{d}" for d in range(dim)), style="display: none",
                 id="probe-json")

    def _acceptUi(self, v3, html) -> None:
        v3.VBtn("Accept (full resolution, save next to the scan)", click=self.onAccept, color="primary",
                size="small", block=True, classes="mt-2", disabled=("busy",), id="accept")
        with html.Div(v_for="a in accepted", key=("a.nifti",), classes="text-caption accepted"):
            html.Span("{{ a.point }} → {{ a.nifti }}, {{ a.seg }}")

    def _reviewUi(self, v3, html) -> None:
        html.Div("Review queue", classes="text-subtitle-2 mt-3")
        with html.Div(classes="d-flex align-center", v_if="!review_started"):
            v3.VTextField(v_model=("reviewer",), label="Your name (saved with each verdict)", density="compact",
                          hide_details=True, id="reviewer")
            v3.VBtn("Start review", click=self.onStartReview, size="small", classes="ml-2", id="start-review")
        with html.Div(v_if="review_case", classes="mt-1", id="review-verdict"):
            html.Div("{{ review_case }}: its label (filled) and the main mode (outlined)", classes="text-caption")
            v3.VTextField(v_model=("review_note",), label="Note", density="compact", hide_details=True, id="review-note")
            with html.Div(classes="d-flex mt-1"):
                for verdict, text in (("correct", "label correct"), ("wrong", "label wrong"),
                                      ("style", "different style")):
                    v3.VBtn(text, size="x-small", classes="mr-1", click=functools.partial(self.onVerdict, verdict),
                            id=f"verdict-{verdict}")
                v3.VSpacer()
                v3.VBtn("back to scan", size="x-small", click=self.onBackToScan, id="back-to-scan")
        # the case on screen and its verdict buttons above the ranked table, which scrolls on its own
        with html.Div(v_if="review_started", style="max-height: 260px; overflow-y: auto"):
            with html.Table(v_if="review_started", style="width: 100%; font-size: 12px", id="review-table"):
                with html.Tr():
                    for title in ("rank", "case", "suspicion", "style", "verdict", ""):
                        html.Th(title, style="text-align: left")
                with html.Tr(v_for="r in review_rows", key=("r.id",), classes="review-row",
                             style=("{background: r.id === review_case ? '#e3f2fd' : 'none'}",)):
                    html.Td("{{ r.rank }}")
                    html.Td("{{ r.id }}")
                    html.Td("{{ r.suspicion }}")
                    html.Td("{{ r.style }}")
                    html.Td("{{ r.verdict }}", classes="verdict")
                    with html.Td():
                        v3.VBtn("open", size="x-small", click=(self.onOpenReviewCase, "[r.id]"), classes="open-case",
                                disabled=("busy",))

    # ------------------------------------------------------------------ serving
    def serve(self, host: str, port: int, token: str | None = None, onReady=None) -> None:
        """Serve until interrupted; ``token`` (if any) is required from every websocket client."""
        import os
        import shlex

        arguments = ["--host", host, "--port", str(int(port)), "--server", "--timeout", "0"]
        if token:
            arguments += ["--authKey", token]
        os.environ["TRAME_ARGS"] = shlex.join(arguments)  # trame reads only these, never our own argv
        if onReady is not None:
            self.server.controller.on_server_ready.add(lambda **_: onReady())
        self.server.start(host=host, port=int(port), open_browser=False, show_connection_info=False, timeout=0)
