"""Hostile-input sweep: every page's widgets and URL parameters get hostile values, and the page must survive.

The app is a public classroom server: 30 students, one of them hostile. A
browser only sends what a widget allows, but a hostile client talks to the
websocket directly, so a text box may receive 60,000 characters whatever its
``max_chars``, a number input a value outside its range, a link any query
parameter. For each page (opened through ``explorer/Home.py`` with the tiny
random model, so the sidebar and the URL guard run as on the server), the
sweep lists the page's widgets after the first run and tries on each:

* text inputs and areas: empty, blank, 60,000 characters, a Markdown link and
  image, ``<script>``, ``<img onerror>``, NUL and control characters, lone
  surrogates, RTL / emoji / combining marks, format strings;
* number inputs and sliders: their minimum, maximum and beyond (±1 and far
  beyond), NaN and ±inf where the widget is a float without bounds, None where
  it may be empty;
* select boxes and radios: every option (and the widgets an option reveals,
  one level down: an uploader, a paste box), and a label that is no option;
  select sliders: both ends and no option; multiselects: none, one, all, all
  and one that is no option, one repeated; checkboxes and toggles: both;
* file uploaders: an empty file, binary garbage, 19 MB (under the server's
  20 MB cap), invalid UTF-8, UTF-16, NUL bytes, a CSV with a million columns,
  JSON of the wrong shape, rows made of web markup (each named with a type the
  uploader accepts), and a file of a type it does not accept;
* after a hostile value, the buttons that use it (Next token's draws, seq2seq's
  generation, the tokenizer's training); never a button that starts a training
  run (Pretrain, Fine-tune, the seq2seq classifier);
* every URL parameter the page reads (its persisted names, ``lang``, ``model``,
  ``lesson``, ``step``, ``layer``, ``head``) plus unknown ones, set all at
  once to a huge number, a negative one, NaN, inf, Markdown, HTML, a 3,000
  character value..., then each repeated with the hostile value last.

Values go in as a client writing to the websocket sends them (option labels,
not the page's own objects); a value no client can send (a lone surrogate: the
protobuf strings are UTF-8) is counted as unsendable, not tried. A file of a
type the uploader does not list is refused by Streamlit itself, before the
page's script runs (STREAMLIT_REFUSALS): counted apart and listed, since no
page code can catch it.

After each try: no exception box, no run that raises or times out, no
"unexpected error" message (a ValueError the page did not foresee), no Markdown
link or image made of the hostile text in any element that renders Markdown
(bodies, alerts, headings, widget labels and help, radio options, expander and
tab labels), and no raw ``<script>``/``<img onerror>`` from the hostile text in
an ``st.html`` body, an HTML-enabled Markdown body or an iframe's document.

``pytest -s`` prints tried / survived per page; with ``HOSTILE_SWEEP_REPORT``
set, the same table is written there as JSON.
"""
from __future__ import annotations

import json
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from explorer.ui.i18n import lookup

# The sweep found that transformers' first import is not thread-safe (a name imported from it while Home.py's
# preload thread imports it raised ImportError "cannot import name 'AutoTokenizer'"): the app now resolves those
# names once, in explorer/ui/model_store.py's import, before any preload starts. The sweep checks it stays so.
HOME = "../explorer/Home.py"
PAGES_DIR = Path(__file__).resolve().parents[1] / "pages"
PAGES = sorted((p.stem for p in PAGES_DIR.glob("*.py")), key=lambda s: int(s.split("_", 1)[0]))
MODEL = "tiny-random"
RUN_TIMEOUT = 60  # seconds per script run: far above a normal run (under 1 s with the tiny model)

# buttons never clicked: they start training (a job, or a loop inside the script)
NEVER_CLICK = {"pretrain.start", "finetune.start", "seq2seq.train"}
# the buttons that use a widget's value: clicked after each hostile value of that widget
USES = {
    "_w.next_token.prompt": ("next_token.greedy_btn", "next_token.sample_btn", "next_token.undo"),
    "_w.next_token.temperature": ("next_token.sample_btn",),
    "_w.next_token.top_k": ("next_token.sample_btn",),
    "_w.next_token.top_p": ("next_token.sample_btn",),
    "_w.next_token.min_p": ("next_token.sample_btn",),
    "_w.next_token.rep_penalty": ("next_token.sample_btn",),
    "_w.next_token.seed": ("next_token.sample_btn",),
    "_w.seq2seq.text": ("seq2seq.go",),
    "_w.seq2seq.new": ("seq2seq.go",),
    "_w.tok.train_paste": ("_w.tok.train_go",),
    "_w.tok.train_file": ("_w.tok.train_go",),
    "_w.tok.train_vocab": ("_w.tok.train_go",),
}
# a cheaper starting point where each run generates text (every widget still gets its hostile values)
SETUP = {"7_Decoding": {"decoding.max_new": 6, "decoding.beams": 2}}
SKIP_OPTIONS = {"_w.app.model"}  # the sidebar's model box: the real models take minutes to load here

TEXT_KINDS = ("text_input", "text_area")
NUMBER_KINDS = ("number_input", "slider")
OPTION_KINDS = ("selectbox", "radio", "select_slider")
BOOL_KINDS = ("checkbox", "toggle")
WIDGET_KINDS = TEXT_KINDS + NUMBER_KINDS + OPTION_KINDS + BOOL_KINDS + ("multiselect", "file_uploader", "button")

EVIL = "https://evil.example/"
LINK = f"[x]({EVIL}) ![y]({EVIL}a.png)"
SCRIPT = "<script>alert(1)</script>"
IMG = "<img src=x onerror=alert(1)>"
HOSTILE_TEXTS = {
    "empty": "",
    "blank": " \t\n \u00a0\u3000 ",
    "huge": ("Le chat dort. [x](https://evil.example/) " * 1500)[:60_000],
    "markdown": f"# titre\n\n* {LINK}\n\n> **gras** <https://evil.example/> {LINK}",
    "html": f"{SCRIPT} {IMG} &lt;b&gt;",
    "control": "a\x00b\x01c\x07d\x1b[31me\x7ff\x9b\u202eg\u200bh\ufeff\x0c\x0b",
    "surrogates": "a\ud800b\udfffc\udc00",
    "unicode": ("مرحبا بالعالم שלום 👩‍👩‍👧‍👦🏳️‍🌈 e\u0301\u0301\u0301 "
                "Z\u0337\u0322a\u0338l\u0334g\u0335o\u0336 \U0001f600") * 3,
    "format": "{{}} {} %s %d %(x)s {0} {x} {__class__} {0:>99999}",
    "backticks": f"``` `{LINK}` ``",
}

_rng = random.Random(0)
GARBAGE = bytes(_rng.getrandbits(8) for _ in range(65_536))
HOSTILE_FILES = {
    "empty": ("empty.txt", b"", "text/plain"),
    "garbage": ("garbage.txt", GARBAGE, "text/plain"),
    "garbage-json": ("garbage.json", GARBAGE, "application/json"),
    "huge": ("huge.txt", b"Le chat dort sur le tapis. " * 700_000, "text/plain"),  # 18.9 MB: under the 20 MB cap
    "wrong-extension": ("evil.exe", b"MZ\x90\x00\x03\x00\x00\x00" + GARBAGE[:4096], "application/x-msdownload"),
    "invalid-utf8": ("latin1.txt", "Café crème, déjà vu. ".encode("latin-1") * 50 + b"\xff\xfe\xc3\x28\xed\xa0\x80",
                     "text/plain"),
    "utf16": ("utf16.txt", "Le texte en UTF-16, avec accents : été.\n".encode("utf-16") * 20, "text/plain"),
    "nul": ("nul.txt", b"a\x00b\x00" * 5_000, "text/plain"),
    "million-columns": ("wide.csv", (",".join(f"c{i}" for i in range(1_000_000)) + "\n" + "1," * 999_999 + "1\n")
                        .encode(), "text/csv"),
    "json-object": ("shape.json", b'{"instruction": {"nested": [1, 2]}, "output": null}', "application/json"),
    "json-scalars": ("list.json", b'[1, "two", null, [3], true]', "application/json"),
    "json-wrong-rows": ("rows.json", b'[{"instruction": 5, "input": null, "output": ["x"]}, {}]', "application/json"),
    "jsonl-markup": ("markup.jsonl", "\n".join(json.dumps({"instruction": v, "input": v, "output": v, "text": v,
                                                           "label": v})
                                                for v in (LINK, SCRIPT, IMG, "{0} %s")).encode() + b"\n{broken",
                     "application/jsonl"),
    "csv-markup": ("markup.csv", f'text,label\n"{LINK}",{SCRIPT}\n"{IMG}","{{0}}"\n'.encode(), "text/csv"),
}

HOSTILE_PARAMS = {
    "huge": "9" * 400,
    "huge-exp": "1e999",
    "negative": "-1",
    "very-negative": "-1e308",
    "nan": "NaN",
    "inf": "inf",
    "empty": "",
    "markdown": LINK,
    "html": SCRIPT + IMG,
    "too-long": "a" * 3_000,
    "format-control": "{0}%s{x}\x00\x1b\u202e",
    "unicode-digits": "\u0661\u0662",
    "fraction": "0.5",
}
SHORT_PARAMS = ("lang", "model", "lesson", "step", "layer", "head")
UNKNOWN_PARAMS = ("evil", "app.local_dir", "app.device", "x" * 70, "tok.a.b.c.d.e.f", "__proto__")

# Streamlit's own refusals, raised while it compares widget values, before the page's script runs: an upload
# whose name has a type the uploader does not list (only a client that bypasses the browser's file filter sends
# one). The forging session gets Streamlit's error box (its details hidden on the server); no page code can
# catch it. Counted apart, and listed.
STREAMLIT_REFUSALS = re.compile(r"^Invalid file extension: ")
# a link or an image ([x](url), ![y](url)), an autolink (<url>) or a bare URL (GitHub-flavoured Markdown links it)
LINK_LEAK = re.compile(r"\[[^\]]*\]\(\s*<?https?://evil|<https?://evil|(?<![\w/])https?://evil", re.IGNORECASE)
CODE_SPAN = re.compile(r"(?<!`)(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
ESCAPED = re.compile(r"\\.", re.DOTALL)


# ------------------------------------------------------------------ what a page shows
def _markdown_text(text: str) -> str:
    """What Markdown would read as syntax: code spans and backslash escapes removed."""
    return CODE_SPAN.sub(" ", ESCAPED.sub(" ", text))


def rendered_markdown(at: AppTest) -> list[tuple[str, str]]:
    """(where, text) of everything the page draws as Markdown."""
    out = []
    for node in at._tree:
        proto = getattr(node, "proto", None)
        kind = getattr(node, "type", "")
        if proto is None:
            continue
        if kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "header", "subheader"):
            body = getattr(proto, "body", None)
            if isinstance(body, str):
                out.append((kind, body))
        for attr in ("label", "help"):
            value = getattr(node, attr, None)
            if isinstance(value, str) and value:
                out.append((f"{kind}.{attr}", value))
        if kind == "radio":
            out.extend((f"{kind}.option", o) for o in node.options)
    return out


def html_documents(at: AppTest) -> list[tuple[str, str, bool]]:
    """(where, html, scripts_only): st.html bodies, HTML-enabled Markdown, iframe documents."""
    out = []
    for node in at._tree:
        proto = getattr(node, "proto", None)
        kind = getattr(node, "type", "")
        if proto is None:
            continue
        if kind == "html":
            out.append(("html", proto.body, False))
        elif kind in ("markdown", "caption") and getattr(proto, "allow_html", False):
            out.append((kind, proto.body, False))
        elif kind == "iframe":
            out.append(("iframe", getattr(proto, "srcdoc", ""), True))
    return out


def problems(at: AppTest) -> list[str]:
    """What is wrong with the page as it stands after a run."""
    found = [f"exception: {e.value} at {' | '.join(e.stack_trace[-3:])}"[:600] for e in at.exception]
    unexpected = [lookup("common.unexpected", lang) or "" for lang in ("fr", "en")]
    stems = [u.split("{", 1)[0].strip() for u in unexpected if u]
    for e in at.error:
        if any(stem and stem in str(e.value) for stem in stems):
            found.append(f"unexpected-error message: {e.value}"[:300])
    for where, text in rendered_markdown(at):
        if LINK_LEAK.search(_markdown_text(text)):
            found.append(f"markdown link rendered in {where}: {text[:160]!r}")
    for where, html, scripts_only in html_documents(at):
        if SCRIPT in html:
            found.append(f"raw <script> in {where}")
        if not scripts_only and IMG in html:
            found.append(f"raw <img onerror> in {where}")
    return found


# ------------------------------------------------------------------ the tally
@dataclass
class Tally:
    widgets: int = 0
    tried: int = 0
    survived: int = 0
    url_tried: int = 0
    url_survived: int = 0
    not_sendable: int = 0
    streamlit: int = 0  # refused by Streamlit itself before the page runs (STREAMLIT_REFUSALS)
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    failures_known: list[str] = field(default_factory=list)  # what Streamlit refused itself
    slowest: list[tuple[float, str]] = field(default_factory=list)  # the 3 slowest runs: (seconds, what)

    def timed(self, seconds: float, what: str) -> None:
        self.slowest = sorted(self.slowest + [(round(seconds, 2), what[:120])], reverse=True)[:3]


RESULTS: dict[str, Tally] = {}


@pytest.fixture(scope="module", autouse=True)
def summary():
    from streamlit import config

    shown_before = config.get_option("client.showErrorDetails")
    config.set_option("client.showErrorDetails", "full")  # a failure names its error (the server shows none)
    yield
    config.set_option("client.showErrorDetails", shown_before)
    if RESULTS:
        print("\n" + summary_table(RESULTS))
        path = os.environ.get("HOSTILE_SWEEP_REPORT")
        if path:
            Path(path).write_text(json.dumps({page: r.__dict__ for page, r in RESULTS.items()}, indent=1,
                                             ensure_ascii=False), encoding="utf-8")


COLUMNS = (("widgets", "widgets"), ("tried", "tried"), ("survived", "survived"), ("url_tried", "url tried"),
           ("url_survived", "url ok"), ("streamlit", "streamlit"), ("not_sendable", "unsendable"),
           ("seconds", "s"))


def summary_table(results: dict[str, Tally]) -> str:
    """Tried / survived per page (widget values, then URL (parameter, value) pairs), as a text table."""
    def row(name: str, values: list) -> str:
        return f"{name:<16}" + "".join(f"{v:>11.1f}" if isinstance(v, float) else f"{v:>11}" for v in values)

    head = row("page", [title for _, title in COLUMNS])
    lines = ["Hostile-input sweep", head, "-" * len(head)]
    lines += [row(page, [getattr(r, f) for f, _ in COLUMNS]) for page, r in results.items()]
    lines += ["-" * len(head), row("total", [sum(getattr(r, f) for r in results.values()) for f, _ in COLUMNS])]
    slow = sorted((run + (page,) for page, r in results.items() for run in r.slowest), reverse=True)[:6]
    lines.append("slowest runs: " + "; ".join(f"{page} {what} {seconds:.1f} s" for seconds, what, page in slow))
    lines += [f"refused by Streamlit {page}: {what}" for page, r in results.items() for what in r.failures_known]
    lines += [f"FAIL {page}: {failure}" for page, r in results.items() for failure in r.failures]
    return "\n".join(lines)


# ------------------------------------------------------------------ the sweep
def send(w, state: WidgetState) -> None:
    """Make the next run receive ``state`` for ``w``, exactly as a client writing to the websocket would send it
    (AppTest's own setters format values through the page's format_func; a client sends the option labels)."""
    cls = type(w)
    w.__class__ = type(f"Sent{cls.__name__}", (cls,), {"_widget_state": property(lambda self: state)})


def option_state(w, labels: list[str]) -> WidgetState:
    """What a client sends for an option widget showing ``labels`` (one label, or several for a multiselect)."""
    state = WidgetState()
    state.id = w.id
    if w.type in ("radio", "selectbox"):
        state.string_value = labels[0]
    else:  # multiselect, select_slider
        state.string_array_value.data[:] = labels
    return state


def fitted(w, label: str, file: tuple[str, bytes, str]) -> tuple[str, bytes, str]:
    """``file`` named with an extension the uploader accepts (but for the wrong-extension file): its content is
    what is hostile, and Streamlit refuses a file of another type before the page runs (STREAMLIT_REFUSALS)."""
    name, data, mime = file
    allowed = [x for x in w.allowed_type if x.startswith(".")]
    if label == "wrong-extension" or not allowed or Path(name).suffix in allowed:
        return file
    return Path(name).stem + allowed[0], data, mime


def sendable(value) -> bool:
    """Can a client send this widget value? Protobuf strings are UTF-8: lone surrogates cannot travel."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return False
    return True


def identity(w) -> tuple[str, str]:
    return (w.type, w.key or f"label:{w.label}")


class Sweep:
    def __init__(self, page: str, tally: Tally, sidebar: bool = False):
        self.page, self.tally, self.sidebar = page, tally, sidebar
        self.done: set[tuple[str, str]] = set()
        self.params: set[str] = set()
        self.at = self.fresh()

    # --- sessions and runs
    def fresh(self) -> AppTest:
        at = AppTest.from_file(HOME, default_timeout=RUN_TIMEOUT)
        at.session_state["app.model"] = MODEL
        for name, value in SETUP.get(self.page, {}).items():
            at.session_state[name] = value
        at.run()
        at.switch_page(f"../pages/{self.page}.py")
        at.run()
        assert not at.exception, f"{self.page} fails before any hostile value: {at.exception}"
        return at

    def widgets(self):
        """The page's widgets (or the sidebar's, for the sidebar sweep), in page order."""
        side = {id(w.proto) for kind in WIDGET_KINDS for w in self.at.sidebar.get(kind)}
        found = []
        for kind in WIDGET_KINDS:
            for w in self.at.get(kind):
                if (id(w.proto) in side) == self.sidebar and not getattr(w.proto, "disabled", False):
                    found.append(w)
                    if w.key and w.key.startswith("_w."):
                        self.params.add(re.sub(r"\.(fr|en)$", "", w.key[3:]))
        return found

    def find(self, ident):
        for w in self.at.get(ident[0]):
            if identity(w) == ident:
                return w
        return None

    def run(self, what: str, url: int = 0) -> bool:
        """Run the page and check it; a failure is recorded and the session replaced by a fresh one.

        ``url``: the number of hostile (parameter, value) pairs this run tries, when it is a URL run.
        """
        if url:
            self.tally.url_tried += url
        else:
            self.tally.tried += 1
        start = time.perf_counter()
        try:
            self.at.run()
            self.tally.timed(time.perf_counter() - start, what)
            if self.at.exception and all(STREAMLIT_REFUSALS.match(e.value) for e in self.at.exception):
                self.tally.streamlit += url or 1
                self.tally.failures_known.append(what)
                self.at = self.fresh()
                return False
            found = problems(self.at)
        except Exception as exc:  # a run that raises (AppTest's time-out included) is a failure too
            found = [f"run raised {type(exc).__name__}: {exc}"[:300]]
        if found:
            self.tally.failures.extend(f"{what}: {p}" for p in found)
            self.at = self.fresh()
            return False
        if url:
            self.tally.url_survived += url
        else:
            self.tally.survived += 1
        return True

    def click_uses(self, ident, what: str) -> None:
        for key in USES.get(ident[1], ()):
            button = self.find(("button", key))
            if button is not None and not button.proto.disabled and key not in NEVER_CLICK:
                button.click()
                self.run(f"{what}, then {key}")

    # --- one widget
    def values_for(self, w) -> list[tuple[str, object]]:
        kind = w.type
        if kind in TEXT_KINDS:
            return list(HOSTILE_TEXTS.items())
        if kind in BOOL_KINDS:
            return [("true", True), ("false", False)]
        if kind in OPTION_KINDS:
            labels = [] if w.key in SKIP_OPTIONS else [(f"option {i}", [o]) for i, o in enumerate(w.options)]
            if kind == "select_slider":          # a slider: its two ends (and beyond: no option at all)
                labels = [("first", [w.options[0]]), ("last", [w.options[-1]])]
            return [(n, option_state(w, v)) for n, v in labels + [("not an option", [LINK])]]
        if kind == "multiselect":
            opts = list(w.options)
            chosen = [("none", []), ("first", opts[:1]), ("all", opts), ("all + not an option", opts + [LINK]),
                      ("repeated", opts[:1] * 3)]
            return [(name, option_state(w, value)) for name, value in chosen]
        if kind == "file_uploader":
            return [(name, fitted(w, name, file)) for name, file in HOSTILE_FILES.items()]
        if kind == "slider":
            return self._number_values(w, w.min, w.max, float(w.step) if w.step else 1.0, w.value)
        if kind == "number_input":
            return self._number_values(w, w.min, w.max, w.step, w.value)
        return []

    @staticmethod
    def _number_values(w, low, high, step, value) -> list[tuple[str, object]]:
        if isinstance(value, (list, tuple)):  # a range slider: the whole range, beyond it, reversed
            return [("full range", [low, high]), ("beyond", [low - 1, high + 1]), ("reversed", [high, low])]
        whole = isinstance(value, int) or (isinstance(step, (int, float)) and float(step).is_integer()
                                           and (value is None or float(value).is_integer()))
        cast = int if whole else float
        out = []
        if low is not None:
            out += [("min", cast(low)), ("below min", cast(low) - 1), ("far below", cast(low) - 10**9)]
        else:
            out += [("-1", cast(-1)), ("far negative", -(2**62) if whole else -1e308)]
        if high is not None:
            out += [("max", cast(high)), ("above max", cast(high) + 1), ("far above", cast(high) + 10**9)]
        else:
            out += [("far positive", 2**62 if whole else 1e308), ("zero", cast(0))]
        if not whole and w.type == "number_input":
            out += [("nan", float("nan")), ("inf", float("inf")), ("-inf", float("-inf")), ("tiny", 5e-324)]
        if w.type == "number_input" and value is None:
            out.append(("none", None))
        return out

    def sweep_widget(self, ident, depth: int = 0) -> None:
        if ident in self.done or (ident[0] == "button"):
            return
        self.done.add(ident)
        w = self.find(ident)
        if w is None:
            return
        self.tally.widgets += 1
        original = WidgetState()
        original.CopyFrom(w._widget_state)
        before = {identity(x) for x in self.widgets()}
        for name, value in self.values_for(w):
            w = self.find(ident)
            if w is None:                       # gone after the previous value (a failure): start again
                self.at = self.fresh()
                w = self.find(ident)
                if w is None:
                    return
            what = f"{ident[1]} = {name}"
            if not sendable(value):              # the websocket's protobuf cannot carry it: no client can send it
                self.tally.not_sendable += 1
                continue
            if isinstance(value, WidgetState):
                send(w, value)
            else:
                w.set_value(value)
            if not self.run(what):
                continue
            self.click_uses(ident, what)
            if depth == 0 and (w.type in OPTION_KINDS + BOOL_KINDS):  # what this option reveals, one level down
                for new in [identity(x) for x in self.widgets()]:
                    if new not in before and new not in self.done:
                        self.sweep_widget(new, depth + 1)
                        # back to this option for the next revealed widget
                        again = self.find(ident)
                        if again is None:
                            break
                        send(again, value) if isinstance(value, WidgetState) else again.set_value(value)
                        self.at.run()
        self.restore(ident, original)

    def restore(self, ident, original: WidgetState) -> None:
        """The widget back to its first value (a fresh session when that fails)."""
        w = self.find(ident)
        try:
            if w is not None:
                send(w, original)
                self.at.run()
            if w is None or self.at.exception:
                self.at = self.fresh()
        except Exception:
            self.at = self.fresh()

    def sweep_widgets(self) -> None:
        for ident in [identity(w) for w in self.widgets()]:
            self.sweep_widget(ident)

    # --- the URL
    def sweep_url(self) -> None:
        names = sorted(self.params | set(SHORT_PARAMS))
        self.at = self.fresh()
        for label, raw in HOSTILE_PARAMS.items():
            self.at.query_params.clear()
            self.at.query_params.update({name: raw for name in names})
            self.at.query_params.update({name: raw for name in UNKNOWN_PARAMS})
            self.run(f"URL all params = {label}", url=len(names) + len(UNKNOWN_PARAMS))
        self.at.query_params.clear()              # a repeated parameter, the hostile value last
        self.at.query_params.update({name: ["1", LINK] for name in names})
        self.run("URL repeated params", url=len(names))


@pytest.mark.parametrize("page", PAGES + ["sidebar"])
def test_page_survives_hostile_input(page):
    start = time.perf_counter()
    tally = RESULTS.setdefault(page, Tally())
    sweep = Sweep("0_Home" if page == "sidebar" else page, tally, sidebar=page == "sidebar")
    sweep.sweep_widgets()
    if page != "sidebar":
        sweep.sweep_url()
    tally.seconds = time.perf_counter() - start
    assert tally.tried + tally.url_tried > 0
    assert not tally.failures, "\n".join(tally.failures)


# ------------------------------------------------------------------ the detectors themselves
def _shown_app(raw: bool):
    """A page that shows a hostile text raw (``raw``) or made safe, in each place the sweep inspects."""
    def app(raw: bool):
        import html

        import streamlit as st

        from explorer.ui.messages import plain

        evil = "[x](https://evil.example/) ![y](https://evil.example/a.png)"
        markup = "<script>alert(1)</script> <img src=x onerror=alert(1)>"
        text = evil if raw else plain(evil)
        st.markdown(text)
        st.warning(text)
        st.info("https://evil.example/" if raw else plain("https://evil.example/"))  # a bare URL: GFM links it
        st.radio(text, ["a", text])
        with st.expander(text):
            st.caption(text)
        st.html(markup if raw else html.escape(markup))
        st.markdown(markup if raw else html.escape(markup), unsafe_allow_html=True)
        st.code(evil)  # code and plain text never render Markdown
        st.text(evil)
        st.markdown(f"`{evil}`")

    at = AppTest.from_function(app, args=(raw,), default_timeout=RUN_TIMEOUT)
    at.run()
    return at


def test_the_detectors_see_markdown_and_html_made_of_hostile_text():
    found = problems(_shown_app(raw=True))
    where = sorted({p.split(":")[0] for p in found})
    assert where == ["markdown link rendered in caption", "markdown link rendered in expander.label",
                     "markdown link rendered in info", "markdown link rendered in markdown",
                     "markdown link rendered in radio.label",
                     "markdown link rendered in radio.option", "markdown link rendered in warning",
                     "raw <img onerror> in html", "raw <img onerror> in markdown", "raw <script> in html",
                     "raw <script> in markdown"], found


def test_the_detectors_pass_escaped_text_code_and_plain_text():
    assert problems(_shown_app(raw=False)) == []


# ------------------------------------------------------------------ what the sweep found, fixed
def page_at(page: str, lang: str = "fr") -> AppTest:
    at = AppTest.from_file(HOME, default_timeout=RUN_TIMEOUT)
    at.session_state["app.model"] = MODEL
    at.query_params["lang"] = lang
    at.run()
    at.switch_page(f"../pages/{page}.py")
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.mark.parametrize("extra", [[], [LINK]], ids=["too-many", "too-many-and-unknown"])
def test_a_multiselect_sent_more_options_than_it_allows_keeps_the_first_it_allows(extra):
    """Streamlit raises on a multiselect holding more than max_selections, and a page label function (dict.get)
    returned None for a label that is no option: both were exception boxes. Now the known options are kept,
    at most max_selections of them, as from a URL."""
    from explorer.views.tokenizer import BUILTIN

    at = page_at("1_Tokenizer")
    box = at.multiselect(key="_w.tok.selected.fr")
    assert box.value == ["gpt2", "barthez"] and box.max_selections == 4 and len(box.options) == 8
    send(box, option_state(box, list(box.options) + extra))  # all 8 tokenizers (and a link)
    at.run()
    assert not at.exception, at.exception
    assert at.multiselect(key="_w.tok.selected.fr").value == BUILTIN[:4] == ["gpt2", "barthez", "bart", "gemma3"]
    assert at.session_state["tok.selected"] == BUILTIN[:4]


@pytest.mark.parametrize("lang", ["fr", "en"])
@pytest.mark.parametrize("penalty", [5e-324, 1e-3, 101.0, 1e308])
def test_a_repetition_penalty_out_of_range_is_refused_with_a_sentence(lang, penalty):
    """5e-324 divided the logits into inf: multinomial raised on NaN probabilities (an exception box)."""
    from shown import assert_said, shown

    at = page_at("7_Decoding", lang)
    at.number_input(key="_w.decoding.repetition_penalty").set_value(penalty)
    at.run()
    assert not at.exception, at.exception
    assert_said(shown(at, ("error",)), "hostile.repetition_penalty_out_of_range", lang)


def test_the_repetition_penalty_range():
    from gpt_core import decoding as dec
    from gpt_core.errors import InvalidInput

    assert [dec.RepetitionPenalty(p).penalty for p in (0.01, 1.0, 100.0)] == [0.01, 1.0, 100.0]
    for penalty in (5e-324, 0.0099, 100.01):
        with pytest.raises(InvalidInput) as caught:
            dec.RepetitionPenalty(penalty)
        assert caught.value.code == "decoding.repetition_penalty_out_of_range"
        assert caught.value.message.params == {"low": 0.01, "high": 100.0, "value": penalty}
    with pytest.raises(InvalidInput) as caught:
        dec.RepetitionPenalty(0)
    assert caught.value.code == "decoding.bad_repetition_penalty"


@pytest.mark.parametrize("lang", ["fr", "en"])
def test_an_odd_layer_in_the_url_is_not_called_web_markup(lang):
    """?layer=<400 digits> was dropped with the sentence about links, images and tags."""
    from shown import assert_said, piece, shown

    at = AppTest.from_file(HOME, default_timeout=RUN_TIMEOUT)
    at.session_state["app.model"] = MODEL
    at.query_params.update({"lang": lang, "layer": "9" * 400, "head": "1;2"})
    at.run()
    assert not at.exception, at.exception
    said = shown(at, ("warning",))
    assert_said(said, "url.dropped_invalid", lang)
    assert piece("url.dropped_markup", lang) not in said
    assert "layer" not in at.query_params and "head" not in at.query_params
