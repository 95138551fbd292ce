"""Drives ``hypersort explore`` in headless Chromium: the server as a subprocess on a free loopback
port, a Selenium-driven Chromium (Debian's chromium + chromium-driver) at 1280x800, and helpers to
read the page. Used by ``test_explore_browser.py`` and by ``benchmarks/explore_demo.py``.
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
from typing import Sequence

import numpy as np

REPO = Path(__file__).resolve().parents[2]
WINDOW = (1280, 800)


def missing_browser_stack() -> str | None:
    """Why the browser cannot be driven here (None when it can)."""
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
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class ExploreServer:
    """``hypersort explore --run RUN --ct SCAN ...`` in a subprocess; :meth:`wait` returns the URL it prints.

    Args:
        run, scan, dataset: what the command is started with (``dataset`` optional).
        preview_delay_ms: ``--preview-delay-ms``.
        token: ``--token`` (the printed URL then carries it as ``?secret=``).
        extra: more command-line arguments.
    """

    def __init__(self, run: Path, scan: Path, dataset: Path | None = None, preview_delay_ms: float = 150,
                 token: str | None = None, extra: Sequence[str] = ()) -> None:
        self.run, self.scan, self.dataset, self.token = Path(run), Path(scan), dataset, token
        self.port = free_port()
        # One thread, as the tests' own process runs (conftest): the page's labels are compared voxel for
        # voxel with the library's, and a bfloat16 preview rounds differently at another thread count.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1"}
        env.pop("DISPLAY", None)
        command = [sys.executable, "-m", "HyperSORTLib.cli", "explore", "--run", str(self.run), "--ct",
                   str(self.scan), "--port", str(self.port), "--device", "cpu",
                   "--preview-delay-ms", str(preview_delay_ms), *extra]
        if dataset is not None:
            command += ["--data", str(dataset)]
        if token is not None:
            command += ["--token", token]
        self.process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True)
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

    @property
    def base_url(self) -> str:
        """The page's address without the access token."""
        return self.wait(0).split("?", 1)[0]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_browser():
    """Headless Chromium at 1280x800, driven by Selenium through Debian's chromedriver."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     f"--window-size={WINDOW[0]},{WINDOW[1]}", "--hide-scrollbars"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    driver.set_window_size(*WINDOW)
    return driver


def wait(condition, timeout: float, what: str, interval: float = 0.05):
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


def views(driver):
    """The three slice views' streamed images (axial first)."""
    return driver.find_elements("css selector", "#views img.image-display-area")


def open_page(driver, url: str, samples: int | None = None, timeout: float = 300) -> None:
    """Load the page and wait for its three slice views and the latent map's samples."""
    driver.get(url)
    wait(lambda: len(views(driver)) == 3 and all(i.get_attribute("src") for i in views(driver)), timeout,
         "the three slice views")
    wait(lambda: (n := len(driver.find_elements("css selector", "circle.sample"))) and (samples is None or n == samples),
         timeout, "the latent map")


def page_json(driver, element_id: str):
    return json.loads(driver.find_element("id", element_id).get_attribute("textContent"))


def pixels(element) -> np.ndarray:
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


def coloured(image: np.ndarray) -> np.ndarray:
    """Pixels that are not grey: the label layer over the greyscale CT."""
    return (image.max(-1) - image.min(-1)) > 40


def frame_after(driver, source: str, timeout: float = 120, interval: float = 0.05) -> str:
    """Wait for the axial view to receive a new image (the server streams a new blob per frame)."""
    return wait(lambda: (src := views(driver)[0].get_attribute("src")) != source and src, timeout,
                "a new axial frame", interval)


def page_error(driver) -> str:
    found = driver.find_elements("id", "error")
    return found[0].text if found else ""


def record_moves(driver) -> None:
    """From now on ``window.hsMoves`` collects the times of mouse moves over the latent map."""
    driver.execute_script("window.hsMoves = []; if (!window.hsListening) { window.hsListening = true;"
                          " document.getElementById('latent-map')"
                          ".addEventListener('mousemove', () => window.hsMoves.push(performance.now())); }")


def drag_probe(driver, moves: int = 8, dx: int = 7, dy: int = -4) -> float:
    """Drag the probe in one burst of ``moves`` mouse moves of (dx, dy) CSS pixels; returns when the
    release was sent (``time.perf_counter()``)."""
    from selenium.webdriver import ActionChains
    from selenium.webdriver.common.actions.pointer_input import PointerInput

    probe = driver.find_element("id", "probe")
    mouse = PointerInput("mouse", "mouse")
    actions = ActionChains(driver, duration=0, devices=[mouse])
    actions.move_to_element(probe).click_and_hold()
    for _ in range(moves):
        actions.move_by_offset(dx, dy)
    actions.release()
    actions.perform()
    return time.perf_counter()
