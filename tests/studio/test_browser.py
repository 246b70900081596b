"""A scripted session in a real browser (Playwright driving Debian's Chromium, headless) against
the real server process: open a phantom volume, paint on one slice, fill a polygon on another, SAM2 click on a third, train,
see the prediction on a slice never labelled, propagate the labelled slices with SAM2's memory, export, reload and find the edits kept."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import pytest

from .server_process import start_studio

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (the test extra)")
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("needs Debian's chromium (apt-get install chromium)")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        yield launched
        launched.close()


def _go_to_slice(page, index: int) -> None:
    page.eval_on_selector("#slice", "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", index)
    page.wait_for_function(f"window.studioState.index === {index} && document.querySelector('#status').dataset.state === 'ready'")


def _drag(page, points) -> None:
    box = page.locator("#canvas").bounding_box()
    x0, y0 = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x0 + points[0][0], y0 + points[0][1])
    page.mouse.down()
    for dx, dy in points[1:]:
        page.mouse.move(x0 + dx, y0 + dy, steps=4)
    page.mouse.up()


@pytest.mark.slow
def test_a_session_in_the_browser(browser, folder, request):
    process, url = start_studio(folder, "--image-size", "64", "--epochs", "15")
    try:
        page = browser.new_page(viewport={"width": 1200, "height": 760})
        page.goto(url)
        page.wait_for_function("document.querySelector('#status').dataset.state === 'ready'")
        assert "unreadable" in page.locator("#cases li.broken").inner_text() or "broken" in page.locator("#cases").inner_text()

        _go_to_slice(page, 2)  # paint the disc on slice 2
        _drag(page, [(-60, -60), (60, -60), (60, 0), (-60, 0), (-60, 60), (60, 60), (0, 0)])
        page.wait_for_function("document.querySelector('#status').dataset.state === 'saved'")
        _drag(page, [(-40, -40), (40, 40)])
        page.wait_for_function("window.studioState.version === 2")

        _go_to_slice(page, 4)  # a polygon: corners clicked, a double-click fills it
        page.click("button[data-tool=polygon]")
        box = page.locator("#canvas").bounding_box()
        cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
        for dx, dy in [(-80, -80), (80, -80), (80, 80)]:
            page.mouse.click(cx + dx, cy + dy)
        page.mouse.dblclick(cx - 80, cy + 80)
        page.wait_for_function("window.studioState.version === 3")
        assert page.evaluate("window.studioState.layers.edits.filter(v => v).length") >= 40  # ~8x8 pixels

        _go_to_slice(page, 6)  # a SAM2 click, accepted as a label
        page.click("button[data-tool=point-pos]")
        box = page.locator("#canvas").bounding_box()
        page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
        page.wait_for_function("document.querySelector('#status').dataset.state === 'prompted'", timeout=60000)
        page.click("#accept")
        page.wait_for_function("window.studioState.version === 4")
        if not page.evaluate("window.studioState.layers.edits.some(v => v)"):  # random weights: an empty mask
            page.click("button[data-tool=brush]")
            _drag(page, [(-50, -50), (50, 50), (50, -50), (-50, 50)])
            page.wait_for_function("window.studioState.version === 5")

        page.click("#train")  # few-shot training, progress streamed
        page.wait_for_function("document.querySelector('#train-status').dataset.status === 'done'", timeout=120000)
        _go_to_slice(page, 9)  # never labelled: its prediction arrives
        page.wait_for_function("window.studioState.layers.prediction !== null")
        page.screenshot(path=str(request.config.cache.mkdir("studio") / "session.png"))
        if os.environ.get("SAMADAPT_STUDIO_SCREENSHOTS"):  # refreshes docs/img/studio.png
            DOCS_IMG.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(DOCS_IMG / "studio.png"))
            page.select_option("#plane", "coronal")
            page.wait_for_function("window.studioState.plane === 'coronal' && "
                                   "document.querySelector('#status').dataset.state === 'ready'")
            page.screenshot(path=str(DOCS_IMG / "studio-coronal.png"))

        page.click("#propagate")  # SAM2's memory from the labelled slices 2, 4, 6 through the volume
        page.wait_for_function("document.querySelector('#train-status').textContent.includes('propagated')",
                               timeout=120000)
        assert page.locator("#train-status").get_attribute("data-status") == "done"
        assert page.evaluate("window.studioState.layers.prediction !== null")

        page.click("#export")
        page.wait_for_function("document.querySelector('#export-status').dataset.status === 'done'")
        export = folder / ".samadapt-studio" / "export"
        assert (export / "dataset.yaml").is_file() and (export / "labels" / "phantom.nii.gz").is_file()
        assert (export / "predictions" / "phantom_mask.nii.gz").is_file() and (export / "images" / "phantom.nii.gz").is_symlink()

        page.reload()  # the edits are kept
        page.wait_for_function("document.querySelector('#status').dataset.state === 'ready'")
        _go_to_slice(page, 2)
        assert page.evaluate("window.studioState.layers.edits.some(v => v)")
        assert page.evaluate("window.studioState.version") >= 4
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 130
