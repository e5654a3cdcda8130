"""Entry point: `streamlit run explorer/Home.py`.

Page config, the shared sidebar, and navigation over ../pages/*.py.
"""
from pathlib import Path

import streamlit as st

st.set_page_config(page_title="LLM Explorer", page_icon="🔎", layout="wide")

from explorer import settings  # noqa: E402  (after set_page_config)
from explorer.history import startup_quietly  # noqa: E402
from gpt_core.timing import use_page_threads  # noqa: E402
from explorer.ui.i18n import t  # noqa: E402
from explorer.ui.model_store import preload_default  # noqa: E402
from explorer.ui.identity import present  # noqa: E402
from explorer.ui.sidebar import render_sidebar  # noqa: E402

PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"
ICONS = {"0": "home", "1": "text_fields", "2": "scatter_plot", "3": "visibility", "4": "manage_search",
         "5": "account_tree", "6": "casino", "7": "call_split", "8": "dataset", "9": "model_training",
         "10": "tune", "11": "school", "12": "translate", "13": "history"}  # Material Symbols bundled with Streamlit: no emoji font needed


def _order(path: Path) -> int:
    head = path.stem.split("_", 1)[0]
    return int(head) if head.isdigit() else 999


def build_pages() -> list:
    files = sorted(PAGES_DIR.glob("*.py"), key=_order)
    return [
        st.Page(f"../pages/{f.name}", title=t(f"nav.{f.stem}"),
                icon=f":material/{ICONS.get(f.stem.split('_', 1)[0], 'article')}:", default=(i == 0))
        for i, f in enumerate(files)
    ]


use_page_threads(settings.page_threads())  # each script run is a new thread: few threads share the cores best
navigation = st.navigation(build_pages(), expanded=True)  # every page listed: no "View N more" in English
preload_default()  # once per server: the default model loads (and reads its weights) in a background thread
startup_quietly()  # once per server: half-written run folders removed, the runs folder's size cap applied
render_sidebar()
present()  # this browser's identity kept in a cookie; its jobs are not orphans while any page of theirs runs
navigation.run()
