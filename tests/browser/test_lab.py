"""The course in a real browser: JupyterLab in headless Chromium (make browser-test).

1. 06_sampling: Run All; no cell errors; the widgets render, with whole labels; the figure
   under the sliders is complete on first display (moving a slider away and back gives the
   very same image) and moving the temperature slider changes it; saved, its kernel shut
   down and reopened, its widgets still render (their state is saved with it).
2. 03_gpt2 and 09_ddpm opened without running: every stored figure, interactive figure and
   animation shows as an image, no widget shows its text repr, no progress bar is stuck.
Everywhere: no news pop-up, nothing requested from outside 127.0.0.1.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

SCREENSHOTS = Path(__file__).resolve().parent / "screenshots"

RUN_ALL_TIMEOUT = 600  # s: on a cold zoo cache, 06 trains tiny-gpt first (about 2 minutes on 2 cores)
WIDGET_REPR = re.compile(r"^(VBox|HBox|interactive|IntSlider|FloatSlider|Output)\(children=|^\w+Slider\(value=")
SLIDERS_06 = ("interactive_figure(show", "interactive_output(show")  # the cell, now and before issue 12
SLIDERS_03 = ("interactive_figure(show_head", "widgets.interact(show_head")
NOTEBOOK = ".jp-NotebookPanel:not(.lm-mod-hidden) .jp-Notebook"  # the notebook on show
STUCK_PROGRESS = re.compile(r"\b0%\|| 0/\d+ \[")


def open_notebook(page, lab, name):
    page.goto(lab.notebook_url(name))
    page.wait_for_selector(f"{NOTEBOOK} .jp-Cell", timeout=60_000)
    page.wait_for_function(  # the cells attached
        f"() => document.querySelectorAll('{NOTEBOOK} .jp-Cell').length > 5", timeout=60_000)
    page.wait_for_timeout(3000)  # let late renderers (images, widgets) settle


def command(page, menu, command_id):
    page.click(f".lm-MenuBar-item:has-text('{menu}')")
    page.click(f".lm-Menu-item[data-command='{command_id}']")


def prompts(page) -> list[str]:
    return page.eval_on_selector_all(f"{NOTEBOOK} .jp-CodeCell .jp-InputArea-prompt",
                                     "els => els.map(e => e.textContent.trim())")


def wait_for_run_all(page, timeout=RUN_ALL_TIMEOUT):
    """Until every code cell shows its execution count: first the queued cells' [*], then numbers."""
    deadline = time.monotonic() + 30  # Run All marks every queued cell [*] at once
    while "[*]:" not in prompts(page):
        if time.monotonic() > deadline:
            pytest.fail("Run All did not start: no cell was queued within 30 s")
        page.wait_for_timeout(100)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        marks = prompts(page)
        if marks and all(re.fullmatch(r"\[\d+\]:", m) for m in marks):
            return
        page.wait_for_timeout(1000)
    pytest.fail(f"Run All did not finish within {timeout} s; prompts: {prompts(page)}")


def page_text(page) -> str:
    return page.inner_text(NOTEBOOK)


def no_news_popup(page):
    toasts = page.eval_on_selector_all(".Toastify__toast", "els => els.map(e => e.innerText)")
    assert not [t for t in toasts if "news" in t.lower()], f"news pop-up shown: {toasts}"


def broken_images(page) -> list[str]:
    """Output images that did not load (scrolled into view first)."""
    return page.evaluate("""async (sel) => {
        const bad = [];
        for (const img of document.querySelectorAll(sel)) {
            img.scrollIntoView();
            if (!img.complete) await new Promise(r => { img.onload = img.onerror = r; setTimeout(r, 5000); });
            if (!img.naturalWidth) bad.push(img.src.slice(0, 60));
        }
        return bad;
    }""", f"{NOTEBOOK} .jp-OutputArea-output img")


def widget_figure(page) -> str:
    """The src of the figure inside the sliders' output widget (a data: URL)."""
    page.wait_for_selector(f"{NOTEBOOK} .widget-output img", timeout=60_000)
    return page.get_attribute(f"{NOTEBOOK} .widget-output img", "src")


def wait_for_new_figure(page, old: str, timeout=120) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        img = page.query_selector(f"{NOTEBOOK} .widget-output img")
        src = img.get_attribute("src") if img else None
        if src and src != old:
            return src
        page.wait_for_timeout(500)
    pytest.fail("the figure under the sliders did not change after the slider moved")


def slider_handle(page, label):
    slider = page.locator(f"{NOTEBOOK} .widget-slider", has=page.locator(".widget-label", has_text=label)).first
    return slider.locator(".noUi-handle")


def shoot_cell(page, needles: tuple[str, ...], path: str) -> None:
    """Screenshot the first cell whose source contains one of ``needles`` (input and outputs)."""
    for needle in needles:
        cell = page.locator(f"{NOTEBOOK} .jp-Cell", has=page.locator(".jp-InputArea", has_text=needle)).first
        if cell.count():
            break
    else:  # a notebook without such a cell: the page as it is
        page.screenshot(path=str(SCREENSHOTS / path))
        return
    cell.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    cell.screenshot(path=str(SCREENSHOTS / path))


def saved_notebook(lab, name) -> dict:
    return json.loads((lab.root / name).read_text())


def test_06_run_all_widgets_and_sliders(page, lab):
    open_notebook(page, lab, "06_sampling.ipynb")
    no_news_popup(page)
    command(page, "Run", "runmenu:run-all")
    wait_for_run_all(page)
    page.wait_for_timeout(2000)
    shoot_cell(page, SLIDERS_06, "06_run_all_sliders.png")
    text = page_text(page)
    assert "Error displaying widget" not in text
    assert page.locator(f"{NOTEBOOK} .widget-slider").count() >= 4, "the sliders did not render"

    labels = page.eval_on_selector_all(f"{NOTEBOOK} .widget-slider .widget-label", """els => els.map(e => (
        {text: e.textContent, cut: e.scrollWidth > e.clientWidth}))""")
    assert {"temperature", "top-k", "top-p", "seed"} <= {lab_["text"] for lab_ in labels}
    assert not [lab_ for lab_ in labels if lab_["cut"]], f"labels cut off: {labels}"

    # complete on first display: moving the slider away and back must redraw the same image
    first = widget_figure(page)
    handle = slider_handle(page, "temperature")
    handle.scroll_into_view_if_needed()
    handle.focus()
    handle.press("ArrowRight")  # 0.8 -> 0.85
    moved = wait_for_new_figure(page, first)
    shoot_cell(page, SLIDERS_06, "06_slider_moved.png")
    handle.press("ArrowLeft")  # back to 0.8
    back = wait_for_new_figure(page, moved)
    assert back == first, "the figure shown after Run All differs from the same setting redrawn"
    assert moved != first

    # no error outputs, in the notebook as saved
    saved = (lab.root / "06_sampling.ipynb").stat().st_mtime_ns
    command(page, "File", "docmanager:save")
    deadline = time.monotonic() + 30
    while (lab.root / "06_sampling.ipynb").stat().st_mtime_ns == saved and time.monotonic() < deadline:
        page.wait_for_timeout(250)
    nb = saved_notebook(lab, "06_sampling.ipynb")
    errors = [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, f"cells raised: {[e['ename'] + ': ' + e['evalue'] for e in errors]}"
    assert "widgets" in nb["metadata"], "the widget state was not saved with the notebook"

    # reopened after its kernel is gone (what an autosave during Run All leaves): widgets still render
    lab.shutdown_kernels()
    open_notebook(page, lab, "06_sampling.ipynb")
    page.wait_for_timeout(3000)
    shoot_cell(page, SLIDERS_06, "06_reopened_sliders.png")
    assert "Error displaying widget" not in page_text(page)
    assert page.locator(f"{NOTEBOOK} .widget-slider").count() >= 4
    assert not page.external, f"requests outside 127.0.0.1: {page.external}"


@pytest.mark.parametrize("name", ["03_gpt2.ipynb", "09_ddpm.ipynb"])
def test_stored_outputs_render_without_running(page, lab, name):
    open_notebook(page, lab, name)
    no_news_popup(page)
    assert not broken_images(page), f"images that did not load: {broken_images(page)}"
    stem = name.split(".")[0]
    shoot_cell(page, {"03": SLIDERS_03, "09": ("trajectory_animation(",)}[stem[:2]], f"{stem}_stored.png")
    outputs = page.eval_on_selector_all(f"{NOTEBOOK} .jp-OutputArea-output", "els => els.map(e => e.innerText.trim())")
    reprs = [o[:80] for o in outputs if WIDGET_REPR.search(o)]
    assert not reprs, f"widgets shown as their text repr instead of an image: {reprs}"
    stuck = [o[:80] for o in outputs if STUCK_PROGRESS.search(o)]
    assert not stuck, f"progress bars stored unfinished: {stuck}"
    assert "Error displaying widget" not in page_text(page)
    nb = saved_notebook(lab, name)
    for i, cell in enumerate(nb["cells"]):
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data or "text/html" in data and "<script" in data["text/html"]:
                assert any(k.startswith("image/") for k in data), (
                    f"cell {i}: a widget or script output without an image beside it")
    if name.startswith("09"):
        gifs = page.eval_on_selector_all(f"{NOTEBOOK} .jp-OutputArea-output img", "els => els.filter(e => "
                                         "e.src.startsWith('data:image/gif') && e.naturalWidth > 0).length")
        assert gifs >= 1, "the denoising animation is not shown as an image"
    assert not page.external, f"requests outside 127.0.0.1: {page.external}"
