"""A real browser starts a tiny pretraining, watches the live loss curve grow, then cancels it."""
import time

from browser import ARTIFACTS, browser_page, require_browser, streamlit_server, wait_idle

POINTS_JS = """() => {
  for (const g of document.querySelectorAll('.js-plotly-plot')) {
    if (g.data && g.data.length >= 2 && g.layout && g.layout.title &&
        String(g.layout.title.text || '').includes('perte')) { return g.data[0].x.length; }
  }
  return -1;
}"""


def _points(page) -> int:
    return page.evaluate(POINTS_JS)


def _wait_points(page, minimum: int, timeout: float) -> int:
    deadline = time.time() + timeout
    n = _points(page)
    while n < minimum and time.time() < deadline:
        time.sleep(0.25)
        n = _points(page)
    return n


def test_pretrain_live_curve_and_cancel_in_chromium():
    require_browser()
    with streamlit_server() as url, browser_page(height=1400) as page:
        page.goto(url + "/Pretrain")
        wait_idle(page)
        page.wait_for_selector("text=Estimation avant de lancer", timeout=60_000)
        # the smallest preset (1 block, d_model 32, context 32), 20000 steps of batch 4: it cannot end before the cancel
        page.locator("[data-testid='stSelectbox']").filter(has_text="Préréglage").click()
        page.get_by_role("option", name="nano : 1 bloc, d_model 32, contexte 32").click()
        wait_idle(page)
        for label, value in (("Étapes", "20000"), ("Taille de batch", "4")):
            box = page.get_by_label(label, exact=True)
            box.fill(value)
            box.press("Enter")
            wait_idle(page)
        # the preset filled the sliders: 20000 steps x 4 rows x 32 tokens = 2.56 M tokens
        assert page.locator("[data-testid='stMetricValue']").filter(has_text="2,56 M").count() == 1
        page.get_by_role("button", name="Lancer l'entraînement").click()

        # the live fragment draws the curve; it must grow between two looks
        first = _wait_points(page, 2, 60)
        assert first >= 2, f"no live loss curve (points: {first})"
        time.sleep(1.5)
        second = _wait_points(page, first + 1, 30)
        assert second > first, f"the curve did not grow ({first} -> {second} points)"
        page.wait_for_selector("text=Texte généré à l'étape", timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "pretrain_live.png"), full_page=True)

        page.get_by_role("button", name="Annuler").click()
        page.wait_for_selector("text=Entraînement annulé", timeout=30_000)
        wait_idle(page)
        assert page.locator("[data-testid='stException']").count() == 0
        stopped = _points(page)
        assert second <= stopped < 20000  # the run stopped well before its 20000 steps
        page.screenshot(path=str(ARTIFACTS / "pretrain_cancelled.png"), full_page=True)
        assert page.get_by_role("button", name="Télécharger les métriques (JSON)").count() == 1
