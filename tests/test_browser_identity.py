"""Two real browsers on one server: a job survives its owner's reload (the identity cookie) and stays invisible
to the other browser, which can neither cancel nor download it."""
import time

from browser import CHROMIUM, CHROMIUM_ARGS, require_browser, streamlit_server, wait_idle

LOCAL = ("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")


def _page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1400})
    page = context.new_page()
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(LOCAL) else route.abort())
    return context, page


def _owner_cookie(context, wait: float = 20.0) -> str | None:
    """The identity cookie, once the page's small script has stored it."""
    deadline = time.time() + wait
    while True:
        found = next((c["value"] for c in context.cookies() if c["name"] == "llmx_owner"), None)
        if found or time.time() > deadline:
            return found
        time.sleep(0.25)


def _start_long_run(page) -> None:
    page.wait_for_selector("text=Estimation avant de lancer", timeout=90_000)
    page.locator("[data-testid='stSelectbox']").filter(has_text="Préréglage").click()
    page.get_by_role("option", name="nano : 1 bloc, d_model 32, contexte 32").click()
    wait_idle(page)
    box = page.get_by_label("Étapes", exact=True)
    box.fill("3000")
    box.press("Enter")
    wait_idle(page)
    page.get_by_role("button", name="Lancer l'entraînement").click()
    page.get_by_role("button", name="Annuler").wait_for(timeout=90_000)


def test_a_job_follows_its_browser_and_no_other():
    require_browser()
    from playwright.sync_api import sync_playwright

    with streamlit_server() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            alice_ctx, alice = _page(browser)
            alice.goto(url + "/Pretrain", timeout=120_000)
            wait_idle(alice)
            _start_long_run(alice)
            token = _owner_cookie(alice_ctx)
            assert token and len(token) == 32, alice_ctx.cookies()
            assert alice.get_by_role("button", name="Annuler").count() == 1

            alice.reload()  # a new websocket session: the cookie brings the same owner back
            wait_idle(alice)
            alice.get_by_role("button", name="Annuler").wait_for(timeout=90_000)
            assert _owner_cookie(alice_ctx) == token

            bob_ctx, bob = _page(browser)
            bob.goto(url + "/Pretrain", timeout=120_000)
            wait_idle(bob)
            bob.wait_for_selector("text=Estimation avant de lancer", timeout=90_000)
            assert _owner_cookie(bob_ctx) not in (None, token)
            time.sleep(2.5)  # a live view would have drawn by now
            assert bob.get_by_role("button", name="Annuler").count() == 0
            assert bob.locator("[data-testid='stProgress']").count() == 0
            assert bob.locator("[data-testid='stException']").count() == 0

            alice.get_by_role("button", name="Annuler").click()
            alice.wait_for_selector("text=Entraînement annulé", timeout=150_000)
            wait_idle(bob)
            bob.reload()
            wait_idle(bob)
            assert bob.get_by_role("button", name="Télécharger les métriques (JSON)").count() == 0
        finally:
            browser.close()
