"""``hypersort explore`` in a real browser: the server runs as a subprocess on a loopback port with the
packaged tiny run and a real CT from ../shared/data; headless Chromium (Debian's chromium +
chromium-driver) is driven by Selenium at 1280x800.

Checked: the page shows Slicer's slice views and the latent map; clicking a sample segments the CT and
the axial view's pixels turn into label colours, with exactly the voxels the library computes for that
sample; a burst of probe moves makes exactly one recompute, at the final position; Accept writes a NIfTI
with the CT's shape and affine (and a .seg.nrrd) next to the scan without touching an existing file;
a review case opens and its verdict lands in review.csv; a path outside the allowed folders is refused
with a message in the page.

Screenshots go to ``$HYPERSORT_EXPLORE_SCREENSHOTS`` (default: a temporary folder), with
``explore-latency.json``: probe release -> new overlay in the browser, measured here (not asserted).
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[2]
CT = SHARED_DATA / "ct-examples" / "chest-imaging-platform" / "ct.nii.gz"
PREVIEW_DELAY_MS = 500  # a burst is the moves within this time; the test checks that its burst fits


def _missing() -> str | None:
    for module in ("selenium", "trame", "trame_slicer", "slicer", "PIL"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[explore-test]')"
    try:
        from slicer import vtkMRMLLayerDisplayableManager  # noqa: F401  (slicer-layer-dm, which trame-slicer needs)
    except ImportError:
        return "slicer-layer-dm is not installed (pip install -e '.[explore]')"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "no chromium browser (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "no chromedriver (apt-get install chromium-driver)"
    if not CT.is_file():
        return f"the shared CT {CT} is not available"
    return None


_REASON = _missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_REASON is not None, reason=f"browser test: {_REASON}")]


# ---------------------------------------------------------------------------- the server and the browser
class Server:
    def __init__(self, root: Path) -> None:
        from HyperSORTModule import SelfTest

        self.run = root / "run"
        SelfTest.packagedRun(self.run)
        SelfTest.writeAuditTable(self.run)
        self.dataset = SelfTest.writeSphereDataset(root / "dataset")
        self.scan = root / "scans" / "ct.nii.gz"
        self.scan.parent.mkdir()
        shutil.copy(CT, self.scan)
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
        env.pop("DISPLAY", None)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "HyperSORTLib.cli", "explore", "--run", str(self.run), "--ct", str(self.scan),
             "--data", str(self.dataset), "--port", str(self.port), "--device", "cpu",
             "--preview-delay-ms", str(PREVIEW_DELAY_MS)],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        self.url: str | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.log.append(line.rstrip())
            if "serving http" in line and self.url is None:
                self.url = line.split("serving ", 1)[1].strip()
                self._ready.set()
        self._ready.set()

    def wait(self, timeout: float) -> str:
        self._ready.wait(timeout)
        if self.url is None:
            tail = "\n".join(self.log[-30:])
            raise AssertionError(f"hypersort explore did not start within {timeout:.0f} s:\n{tail}")
        return self.url

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("HYPERSORT_EXPLORE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = Server(tmp_path_factory.mktemp("explore"))
    try:
        server.wait(timeout=600)  # importing torch, VTK and trame on a loaded 2-core CI machine
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(server):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,800", "--hide-scrollbars"):
        options.add_argument(argument)
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    options.binary_location = binary
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_window_size(1280, 800)
    try:
        driver.get(server.url)
        _wait(lambda: len(_views(driver)) == 3 and all(i.get_attribute("src") for i in _views(driver)), 300,
              "the three slice views")
        _wait(lambda: len(driver.find_elements("css selector", "circle.sample")) == 6, 300, "the latent map")
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def reference(server):
    """The library's own segmentations of the CT, to compare the page's results with."""
    from HyperSORTLib.inference import InteractiveSegmenter, load_scan

    segmenter = InteractiveSegmenter.load(server.run, device="cpu")
    array, affine, _ = load_scan(server.scan)
    segmenter.set_volume(array, affine)
    return segmenter, array.shape, affine


def _wait(condition, timeout: float, what: str, interval: float = 0.05):
    end = time.perf_counter() + timeout
    while time.perf_counter() < end:
        try:
            value = condition()
        except Exception:  # the page is re-rendering
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _views(driver):
    return driver.find_elements("css selector", "#views img.image-display-area")


def _json(driver, element_id: str):
    return json.loads(driver.find_element("id", element_id).get_attribute("textContent"))


def _pixels(element) -> np.ndarray:
    """The visible part of a view's image (inside its layout cell, inset by 10% from the view's
    coloured border and annotations), from a screenshot of the page."""
    from PIL import Image

    driver = element.parent
    left, top, right, bottom = driver.execute_script(
        "const i = arguments[0].getBoundingClientRect();"
        "const c = arguments[0].closest('.layout-grid-item').getBoundingClientRect();"
        "return [Math.max(i.left, c.left), Math.max(i.top, c.top), Math.min(i.right, c.right),"
        "        Math.min(i.bottom, c.bottom)];", element)
    inset_x, inset_y = 0.1 * (right - left), 0.1 * (bottom - top)
    page = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    box = tuple(int(round(v)) for v in (left + inset_x, top + inset_y, right - inset_x, bottom - inset_y))
    return np.asarray(page.crop(box)).astype(np.int16)


def _coloured(pixels: np.ndarray) -> np.ndarray:
    """Pixels that are not grey: the label layer over the greyscale CT."""
    return (pixels.max(-1) - pixels.min(-1)) > 40


def _voxels(segmenter, z, preview: bool) -> dict[str, int]:
    result = segmenter.segment(np.asarray(z, np.float64), preview=preview)
    counts = np.bincount(result.array.ravel().astype(np.int64), minlength=len(segmenter.class_names))
    return {name: int(counts[i]) for i, name in enumerate(segmenter.class_names) if i > 0}


def _frame_after(driver, source: str, timeout: float = 120) -> str:
    """Wait for the axial view to receive a new image (the server streams a new blob per frame)."""
    return _wait(lambda: (src := _views(driver)[0].get_attribute("src")) != source and src, timeout,
                 "a new axial frame")


def _error(driver) -> str:
    found = driver.find_elements("id", "error")
    return found[0].text if found else ""


# ---------------------------------------------------------------------------- the tests (in page order)
def test_the_page_shows_slicer_views_and_the_latent_map(server, browser, shots):
    assert browser.title == "HyperSORT explore"
    assert browser.execute_script("return [window.innerWidth, window.innerHeight]")[0] >= 1200
    assert len(browser.find_elements("css selector", "rect.centre")) >= 1
    assert _json(browser, "preview-json")["count"] == 0  # nothing is segmented before the user asks
    axial = _pixels(_views(browser)[0])
    assert axial.std() > 10 and _coloured(axial).mean() < 0.01  # the CT, greyscale, without overlay
    assert _error(browser) == ""
    browser.save_screenshot(str(shots / "explore-start.png"))


def test_clicking_a_sample_segments_the_ct_and_the_overlay_appears(server, browser, reference, shots):
    from selenium.webdriver import ActionChains

    segmenter, _, _ = reference
    before = _pixels(_views(browser)[0])
    source = _views(browser)[0].get_attribute("src")
    sample = browser.find_element("css selector", "circle.sample[data-case='case_004']")
    ActionChains(browser).move_to_element(sample).perform()
    _wait(lambda: "case_004" in browser.find_element("id", "hovered").text, 10, "the hovered case id")
    sample.click()
    preview = _wait(lambda: (p := _json(browser, "preview-json"))["count"] == 1 and p, 300, "the preview")
    assert preview["point"] == "case_004"
    np.testing.assert_allclose(preview["latent"], segmenter.latent_of("case_004"), atol=1e-6)
    assert preview["voxels"] == _voxels(segmenter, segmenter.latent_of("case_004"), preview=True)
    _frame_after(browser, source)
    after, = _wait(lambda: (a := _pixels(_views(browser)[0])).shape == before.shape and
                   (np.abs(a - before).max(-1) > 30).sum() > 50 and [a], 120, "the overlay in the axial view")
    changed = np.abs(after - before).max(-1) > 30
    # what changed is the label layer: colour where the CT was grey
    assert _coloured(after)[changed].mean() > 0.9
    assert not _coloured(before)[changed].any()
    assert _error(browser) == ""
    browser.save_screenshot(str(shots / "explore-sample.png"))


def test_a_burst_of_probe_moves_makes_one_recompute_at_the_final_position(server, browser, reference, shots):
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.actions.action_builder import ActionBuilder
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    segmenter, _, _ = reference
    start = _json(browser, "probe-json")
    count = _json(browser, "preview-json")["count"]
    source = _views(browser)[0].get_attribute("src")
    browser.execute_script("window.hsMoves = []; document.getElementById('latent-map')"
                           ".addEventListener('mousemove', () => window.hsMoves.push(performance.now()));")
    probe = browser.find_element("id", "probe")
    mouse = PointerInput("mouse", "mouse")
    actions = ActionChains(browser, duration=0, devices=[mouse])
    actions.move_to_element(probe).click_and_hold()
    for _ in range(8):
        actions.move_by_offset(7, -4)
    actions.release()
    actions.perform()
    released = time.perf_counter()
    moves = browser.execute_script("return window.hsMoves")
    assert len(moves) >= 8 and moves[-1] - moves[0] < 0.6 * PREVIEW_DELAY_MS, (
        f"the burst took {moves[-1] - moves[0]:.0f} ms; it must fit in the preview delay ({PREVIEW_DELAY_MS} ms)")
    preview = _wait(lambda: (p := _json(browser, "preview-json"))["count"] > count and p, 300, "the probe preview")
    previewed = time.perf_counter()
    _frame_after(browser, source)
    shown = time.perf_counter()
    time.sleep(2 * PREVIEW_DELAY_MS / 1000 + 1.0)  # a second recompute would have started by now
    final = _json(browser, "preview-json")
    assert final["count"] == count + 1, f"{final['count'] - count} recomputes after one burst of moves"
    probe_z = _json(browser, "probe-json")
    assert probe_z[0] > start[0] and probe_z[1] > start[1]  # right and up on screen: both coordinates grow
    np.testing.assert_allclose(final["latent"], probe_z, atol=1e-6)
    assert final["voxels"] == _voxels(segmenter, probe_z, preview=True)
    assert final["point"].startswith("z = (")
    browser.save_screenshot(str(shots / "explore-drag.png"))
    latency = {"probe_release_to_preview_state_ms": round(1000 * (previewed - released), 1),
               "probe_release_to_new_axial_frame_ms": round(1000 * (shown - released), 1),
               "server_preview_ms": final["ms"], "preview_delay_ms": PREVIEW_DELAY_MS,
               "moves_in_burst": len(moves), "burst_ms": round(moves[-1] - moves[0], 1),
               "cpu_count": os.cpu_count()}
    (shots / "explore-latency.json").write_text(json.dumps(latency, indent=2) + "\n")
    print("explore probe latency:", latency)


def test_accept_writes_the_ct_grid_next_to_the_scan_and_never_over_a_file(server, browser, reference, shots):
    import nibabel as nib

    segmenter, shape, affine = reference
    browser.find_element("css selector", "circle.sample[data-case='case_001']").click()
    _wait(lambda: _json(browser, "preview-json")["point"] == "case_001", 300, "the case_001 preview")
    taken = server.scan.with_name("ct_hypersort_case_001.nii.gz")
    taken.write_bytes(b"a file the user made")
    browser.find_element("id", "accept").click()
    _wait(lambda: browser.find_elements("css selector", ".accepted"), 300, "the accepted files")
    assert _error(browser) == ""
    assert taken.read_bytes() == b"a file the user made"
    written = server.scan.with_name("ct_hypersort_case_001_2.nii.gz")
    image = nib.load(str(written))
    assert image.shape == shape
    np.testing.assert_allclose(image.affine, affine, atol=1e-4)
    labels = np.asarray(image.dataobj)
    expected = segmenter.segment(segmenter.latent_of("case_001")).array
    assert labels.shape == expected.shape and np.mean(labels == expected) > 0.999
    segmentation = server.scan.with_name("ct_hypersort_case_001_2.seg.nrrd")
    header = segmentation.read_bytes()[:4000]
    assert header.startswith(b"NRRD") and b"Segment0_Name" in header
    assert written.name in browser.find_element("css selector", ".accepted").text
    browser.save_screenshot(str(shots / "explore-accept.png"))


def test_a_review_case_opens_and_its_verdict_is_saved_to_review_csv(server, browser, shots):
    from HyperSORTLib.analysis.review import read_review, review_path

    browser.find_element("css selector", "#reviewer").send_keys("dr.browser")
    browser.find_element("id", "start-review").click()
    rows = _wait(lambda: (r := browser.find_elements("css selector", ".review-row")) and len(r) == 6 and r, 30,
                 "the review table")
    assert "case_004" in rows[0].text  # rank 1 first
    source = _views(browser)[0].get_attribute("src")
    rows[0].find_element("css selector", ".open-case").click()
    _wait(lambda: browser.find_elements("id", "review-verdict"), 300, "the review case")
    _frame_after(browser, source)
    assert _error(browser) == ""
    browser.find_element("css selector", "#review-note").send_keys("ball_b missing")
    time.sleep(0.5)  # the note reaches the server before the verdict
    browser.find_element("id", "verdict-wrong").click()
    _wait(lambda: browser.find_elements("css selector", ".review-row .verdict")[0].text == "wrong", 30,
          "the verdict in the table")
    verdict = read_review(review_path(server.run))["case_004"]
    assert (verdict.verdict, verdict.reviewer, verdict.note) == ("wrong", "dr.browser", "ball_b missing")
    browser.save_screenshot(str(shots / "explore-review.png"))
    browser.find_element("id", "back-to-scan").click()


def test_a_scan_outside_the_allowed_folders_is_refused_in_the_page(server, browser, shots):
    outside = server.run.parent / "private" / "ct.nii.gz"
    outside.parent.mkdir()
    shutil.copy(server.scan, outside)
    from selenium.webdriver.common.keys import Keys

    field = browser.find_element("css selector", "#scan-path")
    field.send_keys(Keys.CONTROL, "a")  # as a user replaces the text (clear() bypasses the page's model)
    field.send_keys(Keys.DELETE)
    field.send_keys(str(outside))
    time.sleep(0.5)
    browser.find_element("id", "open-scan").click()
    message = _wait(lambda: _error(browser), 30, "the error message")
    assert "outside the folders this server may read" in message
    assert "ct.nii.gz" in browser.find_element("id", "run-caption").text  # the open scan stays
    browser.save_screenshot(str(shots / "explore-error.png"))
