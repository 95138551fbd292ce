"""``hypersort explore`` in a real browser: the server runs as a subprocess on a loopback port with the
packaged tiny run and a real CT from ../shared/data, requiring an access token (``--token``, as on a
non-loopback address); headless Chromium (Debian's chromium + chromium-driver) is driven by Selenium
at 1280x800 (:mod:`harness`).

Checked: a page without the token (or with a wrong one) is refused, with it the page loads; the page
shows Slicer's slice views and the latent map; clicking a sample segments the CT and
the axial view's pixels turn into label colours, with exactly the voxels the library computes for that
sample; a burst of probe moves makes exactly one recompute, at the final position; Accept shows its percentage and writes a
NIfTI with the CT's shape and affine (and a .seg.nrrd) next to the scan without touching an existing file;
a review case opens and its verdict lands in review.csv; a path outside the allowed folders is refused
with a message in the page.

Screenshots go to ``$HYPERSORT_EXPLORE_SCREENSHOTS`` (default: a temporary folder), with
``explore-latency.json``: probe release -> new overlay in the browser, measured here (not asserted).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA
from harness import (ExploreServer, coloured, drag_probe, frame_after, missing_browser_stack, open_page, page_error,
                     page_json, pixels, record_moves, start_browser, views, wait)

CT = SHARED_DATA / "ct-examples" / "chest-imaging-platform" / "ct.nii.gz"
PREVIEW_DELAY_MS = 500  # a burst is the moves within this time; the test checks that its burst fits
TOKEN = "browser-test-token-0123456789"


def _missing() -> str | None:
    if not CT.is_file():
        return f"the shared CT {CT} is not available"
    return missing_browser_stack()


_REASON = _missing()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_REASON is not None, reason=f"browser test: {_REASON}")]


# ---------------------------------------------------------------------------- the server and the browser
@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("HYPERSORT_EXPLORE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from HyperSORTModule import SelfTest

    root = tmp_path_factory.mktemp("explore")
    run = root / "run"
    SelfTest.packagedRun(run)
    SelfTest.writeAuditTable(run)
    dataset = SelfTest.writeSphereDataset(root / "dataset")
    scan = root / "scans" / "ct.nii.gz"
    scan.parent.mkdir()
    shutil.copy(CT, scan)
    server = ExploreServer(run, scan, dataset, preview_delay_ms=PREVIEW_DELAY_MS, token=TOKEN)
    try:
        server.wait(timeout=600)  # importing torch, VTK and trame on a loaded 2-core CI machine
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def browser(server):
    driver = start_browser()
    try:
        open_page(driver, server.url, samples=6)
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


def _voxels(segmenter, z, preview: bool) -> dict[str, int]:
    result = segmenter.segment(np.asarray(z, np.float64), preview=preview)
    counts = np.bincount(result.array.ravel().astype(np.int64), minlength=len(segmenter.class_names))
    return {name: int(counts[i]) for i, name in enumerate(segmenter.class_names) if i > 0}


# ---------------------------------------------------------------------------- the tests (in page order)
def test_the_page_needs_the_access_token(server):
    """The server requires a token (as on any non-loopback --host): without it, or with a wrong one, the
    page's websocket is refused and nothing of the run reaches the browser; with it the page loads."""
    assert f"?secret={TOKEN}" in server.url
    driver = start_browser()
    try:
        for url in (server.base_url, f"{server.base_url}?secret=wrong-token-0123456789"):
            driver.get(url)
            time.sleep(8)  # ample for the page to connect (it loads in about a second once the server is up)
            assert not driver.find_elements("css selector", "circle.sample"), f"{url} showed the latent map"
            assert not views(driver), f"{url} showed the slice views"
            assert "case_0" not in driver.page_source
        open_page(driver, server.url, samples=6)
        assert driver.title == "HyperSORT explore"
    finally:
        driver.quit()


def test_the_page_shows_slicer_views_and_the_latent_map(server, browser, shots):
    assert browser.title == "HyperSORT explore"
    assert browser.execute_script("return [window.innerWidth, window.innerHeight]")[0] >= 1200
    assert len(browser.find_elements("css selector", "rect.centre")) >= 1
    assert page_json(browser, "preview-json")["count"] == 0  # nothing is segmented before the user asks
    axial = pixels(views(browser)[0])
    assert axial.std() > 10 and coloured(axial).mean() < 0.01  # the CT, greyscale, without overlay
    assert page_error(browser) == ""
    browser.save_screenshot(str(shots / "explore-start.png"))


def test_clicking_a_sample_segments_the_ct_and_the_overlay_appears(server, browser, reference, shots):
    from selenium.webdriver import ActionChains

    segmenter, _, _ = reference
    before = pixels(views(browser)[0])
    source = views(browser)[0].get_attribute("src")
    sample = browser.find_element("css selector", "circle.sample[data-case='case_004']")
    ActionChains(browser).move_to_element(sample).perform()
    wait(lambda: "case_004" in browser.find_element("id", "hovered").text, 10, "the hovered case id")
    sample.click()
    preview = wait(lambda: (p := page_json(browser, "preview-json"))["count"] == 1 and p, 300, "the preview")
    assert preview["point"] == "case_004"
    np.testing.assert_allclose(preview["latent"], segmenter.latent_of("case_004"), atol=1e-6)
    assert preview["voxels"] == _voxels(segmenter, segmenter.latent_of("case_004"), preview=True)
    frame_after(browser, source)
    after, = wait(lambda: (a := pixels(views(browser)[0])).shape == before.shape and
                   (np.abs(a - before).max(-1) > 30).sum() > 50 and [a], 120, "the overlay in the axial view")
    changed = np.abs(after - before).max(-1) > 30
    # what changed is the label layer: colour where the CT was grey
    assert coloured(after)[changed].mean() > 0.9
    assert not coloured(before)[changed].any()
    assert page_error(browser) == ""
    browser.save_screenshot(str(shots / "explore-sample.png"))


def test_a_burst_of_probe_moves_makes_one_recompute_at_the_final_position(server, browser, reference, shots):
    segmenter, _, _ = reference
    start = page_json(browser, "probe-json")
    count = page_json(browser, "preview-json")["count"]
    source = views(browser)[0].get_attribute("src")
    record_moves(browser)
    released = drag_probe(browser, moves=8, dx=7, dy=-4)
    moves = browser.execute_script("return window.hsMoves")
    assert len(moves) >= 8 and moves[-1] - moves[0] < 0.6 * PREVIEW_DELAY_MS, (
        f"the burst took {moves[-1] - moves[0]:.0f} ms; it must fit in the preview delay ({PREVIEW_DELAY_MS} ms)")
    preview = wait(lambda: (p := page_json(browser, "preview-json"))["count"] > count and p, 300, "the probe preview")
    previewed = time.perf_counter()
    frame_after(browser, source)
    shown = time.perf_counter()
    time.sleep(2 * PREVIEW_DELAY_MS / 1000 + 1.0)  # a second recompute would have started by now
    final = page_json(browser, "preview-json")
    assert final["count"] == count + 1, f"{final['count'] - count} recomputes after one burst of moves"
    probe_z = page_json(browser, "probe-json")
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
    wait(lambda: page_json(browser, "preview-json")["point"] == "case_001", 300, "the case_001 preview")
    taken = server.scan.with_name("ct_hypersort_case_001.nii.gz")
    taken.write_bytes(b"a file the user made")
    browser.execute_script(  # every text the progress line shows, as the page shows it
        "window.hsBusy = []; new MutationObserver(() => { const e = document.getElementById('busy-text');"
        " if (e && window.hsBusy[window.hsBusy.length - 1] !== e.textContent) window.hsBusy.push(e.textContent); })"
        ".observe(document.body, {subtree: true, childList: true, characterData: true});")
    browser.find_element("id", "accept").click()
    wait(lambda: browser.find_elements("css selector", ".accepted"), 300, "the accepted files")
    assert page_error(browser) == ""
    shown = browser.execute_script("return window.hsBusy")
    percents = [int(m) for text in shown for m in re.findall(r"(\d+)%", text)]
    assert percents and percents == sorted(percents), f"the progress went {shown}"
    assert any(0 < p < 100 for p in percents), f"no percentage between 0 and 100 was shown: {shown}"
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
    rows = wait(lambda: (r := browser.find_elements("css selector", ".review-row")) and len(r) == 6 and r, 30,
                 "the review table")
    assert "case_004" in rows[0].text  # rank 1 first
    source = views(browser)[0].get_attribute("src")
    rows[0].find_element("css selector", ".open-case").click()
    wait(lambda: browser.find_elements("id", "review-verdict"), 300, "the review case")
    frame_after(browser, source)
    assert page_error(browser) == ""
    browser.find_element("css selector", "#review-note").send_keys("ball_b missing")
    time.sleep(0.5)  # the note reaches the server before the verdict
    browser.find_element("id", "verdict-wrong").click()
    wait(lambda: browser.find_elements("css selector", ".review-row .verdict")[0].text == "wrong", 30,
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
    message = wait(lambda: page_error(browser), 30, "the error message")
    assert "outside the folders this server may read" in message
    assert "ct.nii.gz" in browser.find_element("id", "run-caption").text  # the open scan stays
    browser.save_screenshot(str(shots / "explore-error.png"))
