"""A real browser opens the app, sees Home draw, and keeps a screenshot."""
from browser import ARTIFACTS, browser_page, require_browser, streamlit_server, wait_idle


def test_home_in_chromium():
    require_browser()
    with streamlit_server() as url, browser_page() as page:
        page.goto(url)
        wait_idle(page)
        page.wait_for_selector("text=Fiche du modèle", timeout=120_000)
        page.wait_for_selector(".js-plotly-plot", timeout=120_000)
        wait_idle(page)
        assert page.locator("[data-testid='stException']").count() == 0
        nav = page.locator("[data-testid='stSidebarNav']")
        shot = ARTIFACTS / "home.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        # the quick look drew one chip per token and the top-10 bars
        assert page.locator(".js-plotly-plot .bars .point").count() == 10
        assert nav.count() in (0, 1)
