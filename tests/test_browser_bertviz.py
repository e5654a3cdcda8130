"""Real browser: bertviz's views draw an SVG with the network closed.

Chromium (Debian, /usr/bin/chromium) loads our self-contained bertviz HTML.
Every request that is not to localhost or a local file is aborted and
recorded: the page must draw without any. Skipped with a reason when Chromium
or Playwright is missing, unless REQUIRE_BROWSER=1 (CI), where it fails.
"""
import os
import shutil
from pathlib import Path

import pytest
import torch

from gpt_core.config import GPTConfig
from gpt_core.model import GPT
from gpt_core.trace import run_with_cache

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-background-networking", "--disable-component-update"]
REQUIRED = os.environ.get("REQUIRE_BROWSER") == "1"


def _missing() -> str | None:
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    from explorer.figures.bertviz_html import vendor_available

    if not vendor_available():
        return "bertviz's offline JavaScript is not installed (bash scripts/vendor_js.sh)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _missing()
    if reason:
        if REQUIRED:
            pytest.fail(f"REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


def _is_local(url: str) -> bool:
    return url.startswith(("file:", "data:", "about:", "blob:", "http://localhost", "http://127.0.0.1"))


def _open_offline(browser, path: Path):
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    blocked, errors = [], []

    def guard(route):
        if _is_local(route.request.url):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", guard)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(path.as_uri())
    return page, blocked, errors


@pytest.mark.parametrize("view, min_marks", [("head", 10), ("model", 20)])
def test_bertviz_draws_an_svg_offline(browser, tmp_path, view, min_marks):
    from explorer.figures.bertviz_html import bertviz_html

    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny").with_(vocab_size=100)).eval()
    _, trace = run_with_cache(model, [5, 6, 7, 8, 9, 10])
    tokens = ["Le", " chat", " dort", " sur", " le", " canapé"]
    html = bertviz_html(trace.attentions, tokens, view=view, layers=[0, 1])
    path = tmp_path / f"{view}.html"
    path.write_text(html, encoding="utf-8")
    page, blocked, errors = _open_offline(browser, path)
    try:
        page.wait_for_selector("svg", timeout=15_000)
        page.wait_for_function(
            "n => document.querySelectorAll('svg line, svg path, svg rect').length >= n", arg=min_marks,
            timeout=15_000)
        marks = page.locator("svg line, svg path, svg rect").count()
        texts = page.eval_on_selector_all("svg text", "els => els.map(e => e.textContent)")
    finally:
        page.close()
    assert marks >= min_marks
    assert blocked == [] and errors == []
    if view == "head":
        assert "canapé" in " ".join(texts)  # the tokens are drawn, accents intact


def test_the_guard_really_blocks_the_network(browser, tmp_path):
    # the same page with bertviz's own CDN tag cannot draw: proof that nothing leaks through
    from bertviz import head_view

    atts = [torch.softmax(torch.zeros(1, 2, 3, 3), -1)]
    path = tmp_path / "cdn.html"
    path.write_text(head_view(atts, ["a", "b", "c"], html_action="return").data, encoding="utf-8")
    page, blocked, _ = _open_offline(browser, path)
    try:
        page.wait_for_timeout(1500)
        assert page.locator("svg").count() == 0
    finally:
        page.close()
    assert any("cdnjs" in url for url in blocked)


def test_bertviz_model_view_speaks_french(browser, tmp_path):
    from explorer.figures.bertviz_html import bertviz_html

    torch.manual_seed(0)
    model = GPT(GPTConfig.preset("tiny").with_(vocab_size=100)).eval()
    _, trace = run_with_cache(model, [5, 6, 7, 8])
    french = {"layer_select": "Couche :", "layers": "Couches", "heads": "Têtes", "detail_layer": "Couche ",
              "detail_head": ", tête "}
    path = tmp_path / "model_fr.html"
    path.write_text(bertviz_html(trace.attentions, ["<bos>", "Le", " chat", " dort"], view="model", labels=french),
                    encoding="utf-8")
    page, blocked, errors = _open_offline(browser, path)
    try:
        page.wait_for_selector("svg text", timeout=15_000)
        texts = page.eval_on_selector_all("svg text", "els => els.map(e => e.textContent)")
        # a click on the first thumbnail (bertviz's transparent click region) opens the detail view
        page.locator("svg rect[style*='opacity: 0']").first.dispatch_event("click")
        page.wait_for_selector("svg text.detail", timeout=5_000)
        detail = page.eval_on_selector_all("svg text", "els => els.map(e => e.textContent)")
    finally:
        page.close()
    assert "Têtes" in texts and "Couches" in texts and "Heads" not in texts and "Layers" not in texts
    assert any(t.startswith("Couche 0, tête 0") for t in detail), detail
    assert blocked == [] and errors == []
