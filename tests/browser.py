"""Shared helpers of the real-browser tests: a Streamlit server and headless Chromium."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update"]
ARTIFACTS = ROOT / "artifacts"


def require_browser() -> None:
    """Skip when Chromium or Playwright is missing, unless REQUIRE_BROWSER=1 (CI), then fail."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(CHROMIUM)
    if not _has_playwright():
        missing.append("playwright (pip)")
    if missing:
        reason = "real-browser test needs " + ", ".join(missing)
        if os.environ.get("REQUIRE_BROWSER") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


def _has_playwright() -> bool:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_server(timeout: float = 90.0):
    port = free_port()
    ARTIFACTS.mkdir(exist_ok=True)
    log = open(ARTIFACTS / f"streamlit-{port}.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "explorer/Home.py", "--server.port", str(port),
         "--server.headless", "true", "--server.address", "127.0.0.1"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError(f"streamlit did not start, see {log.name}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@contextlib.contextmanager
def browser_page(width: int = 1400, height: int = 1000, offline: bool = True):
    """A Chromium page; with offline=True every request that is not to localhost is aborted."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            if offline:
                page.route("**/*", lambda route: route.continue_()
                           if route.request.url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:"))
                           else route.abort())
            yield page
        finally:
            browser.close()


def wait_idle(page, timeout: float = 120.0) -> None:
    """Wait until Streamlit has finished running the script (the status widget is gone)."""
    page.wait_for_selector("[data-testid='stMain']", timeout=timeout * 1000)
    deadline = time.time() + timeout
    time.sleep(2)
    while time.time() < deadline:
        if page.locator("[data-testid='stStatusWidget']").count() == 0:
            return
        time.sleep(0.5)
    raise TimeoutError("the app was still running after %.0f s" % timeout)
