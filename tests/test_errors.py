"""Every error and note of gpt_core is a code that both locales can say.

gpt_core never speaks to a page in a human language: it raises
``GPTCoreError("<module>.<what>", "English template {x}", x=...)`` and returns
``note(code, template, **params)``. The app says them through the locale keys
``core.<code>`` in ``assets/locales/{fr,en}/*.json``. This file walks the
source of gpt_core with ``ast`` (nothing is imported or run) and checks that:

* every call to ``GPTCoreError`` or one of its subclasses (found by AST too)
  and every call to ``note`` gives a literal code and a literal English template
  (re-raising a Message made elsewhere, ``InvalidInput(m.code, m.text, **m.params)``,
  is allowed: the call that made ``m`` is checked);
* both locales have ``core.<code>``, and every ``{placeholder}`` of the two
  sentences and of the template is a keyword passed at each call site;
* the French and English ``core.*`` key sets are identical, nothing is empty,
  no key is defined twice, and the French and English sentences look like
  French and English.
"""
from __future__ import annotations

import ast
import json
import re
import string
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = ROOT / "gpt_core"
LOCALES = ROOT / "assets" / "locales"
LANGS = ("fr", "en")
BASE_ERRORS = {"GPTCoreError", "InvalidInput", "HubUnavailable"}
TRANSLATED = ("field", "split")  # params whose value is a word the app translates: core.<param>.<value>
CODE = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)+$")

# Words that are the same in both languages (names, units, symbols).
SAME_IN_BOTH: set[str] = set()
# Proper names that legitimately carry French letters inside an English sentence.
FRENCH_NAMES = ("Allociné", "Wikipédia", "Université de Sherbrooke", "Illuin")
FRENCH_MARKERS = ("«", "»", " le ", " la ", " les ", " est ", " une ", " du ", " des ",
                  "é", "è", "à", "ç", "ê", "ô")


# ----------------------------------------------------------------- collection
@dataclass
class Site:
    """One call that makes an error or a note."""

    where: str                     # "gpt_core/data.py:83"
    callee: str
    code: str | None               # None when the first argument is not a string literal
    template: str | None           # None when the second argument is not a string literal
    n_args: int
    keywords: set[str] = field(default_factory=set)
    open_kwargs: bool = False      # the call passes **params: keywords unknown statically
    words: dict[str, str] = field(default_factory=dict)  # literal values of the translated params


def _sources() -> list[Path]:
    return sorted(CORE.rglob("*.py"))


def _trees() -> dict[Path, ast.Module]:
    return {path: ast.parse(path.read_text(encoding="utf-8"), str(path)) for path in _sources()}


def _name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def error_classes(trees: dict[Path, ast.Module]) -> set[str]:
    """GPTCoreError and every class (anywhere in gpt_core) that derives from it."""
    known = set(BASE_ERRORS)
    classes = [node for tree in trees.values() for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    grew = True
    while grew:
        grew = False
        for cls in classes:
            if cls.name not in known and any(_name(b) in known for b in cls.bases):
                known.add(cls.name)
                grew = True
    return known


def _literal(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    return None


def _re_raises_a_message(call: ast.Call) -> bool:
    """``InvalidInput(msg.code, msg.text, **msg.params)``: raising a Message made (and checked) elsewhere."""
    args = call.args
    if len(args) != 2 or not all(isinstance(a, ast.Attribute) for a in args):
        return False
    owner = ast.dump(args[0].value)
    rest = [k.value for k in call.keywords if k.arg is None]
    return (args[0].attr, args[1].attr) == ("code", "text") and ast.dump(args[1].value) == owner and any(
        isinstance(r, ast.Attribute) and r.attr == "params" and ast.dump(r.value) == owner for r in rest)


def call_sites(trees: dict[Path, ast.Module]) -> list[Site]:
    errors = error_classes(trees)
    sites = []
    for path, tree in trees.items():
        rel = path.relative_to(ROOT).as_posix()
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call):
                continue
            callee = _name(node.func)
            if callee not in errors and callee != "note":
                continue
            if _re_raises_a_message(node):
                continue  # its code and template were checked where the Message was made
            args = node.args
            sites.append(Site(
                where=f"{rel}:{node.lineno}", callee=callee,
                code=_literal(args[0]) if args else None,
                template=_literal(args[1]) if len(args) > 1 else None,
                n_args=len(args),
                keywords={k.arg for k in node.keywords if k.arg is not None},
                open_kwargs=any(k.arg is None for k in node.keywords),
                words={k.arg: k.value.value for k in node.keywords
                       if k.arg in TRANSLATED and _literal(k.value) is not None},
            ))
    return sites


def locale(lang: str) -> tuple[dict[str, str], list[str]]:
    """All ``core.*`` strings of a language, and the keys defined in more than one file."""
    merged: dict[str, str] = {}
    twice = []
    for path in sorted((LOCALES / lang).glob("*.json")):
        for key, value in json.loads(path.read_text(encoding="utf-8")).items():
            if not key.startswith("core."):
                continue
            if key in merged:
                twice.append(f"{lang}/{path.name}: {key}")
            merged[key] = value
    return merged, twice


def placeholders(text: str) -> set[str]:
    """The ``{name}`` fields of a format string (``{{`` and ``}}`` are literal braces)."""
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in string.Formatter().parse(text)
            if name is not None and name != ""}


# Codes that came to gpt_core with their code when the run plans, the run log and the job moved from the app
# (gpt_core/train/plans.py, job.py and gpt_core/runlog.py): the app's locales say them under these names.
MOVED_PREFIXES = {"runs", "history", "jobs"}


def module_names() -> set[str]:
    """What may prefix a code: the name of a gpt_core module or subpackage, or a prefix that moved here."""
    return ({p.relative_to(CORE).parts[0].removesuffix(".py") for p in _sources()} - {"__init__"}) | MOVED_PREFIXES


@pytest.fixture(scope="module")
def sites() -> list[Site]:
    return call_sites(_trees())


@pytest.fixture(scope="module")
def strings() -> dict[str, dict[str, str]]:
    return {lang: locale(lang)[0] for lang in LANGS}


def _fail(problems: list[str], what: str) -> None:
    assert not problems, f"{len(problems)} {what}:\n" + "\n".join(sorted(problems))


# ----------------------------------------------------------------------- tests
def test_the_walk_finds_the_errors(sites):
    """Sanity: the AST walk sees the known subclasses and a good number of call sites."""
    trees = _trees()
    classes = error_classes(trees)
    assert {"GPTCoreError", "InvalidInput", "HubUnavailable"} <= classes
    assert "OllamaUnavailable" in classes  # defined in evaluate.py, found through its base
    assert len(sites) > 100
    assert any(s.callee == "note" for s in sites)


def test_every_call_gives_a_literal_code_and_template(sites):
    problems = []
    modules = module_names()
    for s in sites:
        if s.n_args < 2:
            problems.append(f"{s.where}: {s.callee}(...) with {s.n_args} positional argument(s): "
                            "legacy form, give a code and an English template")
            continue
        if s.code is None:
            problems.append(f"{s.where}: the code of {s.callee}(...) is not a string literal")
        elif not CODE.match(s.code):
            problems.append(f"{s.where}: malformed code {s.code!r} (lowercase words joined by dots)")
        elif s.code.split(".")[0] not in modules:
            problems.append(f"{s.where}: code {s.code!r} does not start with a gpt_core module name")
        if s.template is None:
            problems.append(f"{s.where}: the English template of {s.callee}(...) is not a string literal")
    _fail(problems, "calls without a literal code and template")


def test_every_code_is_in_both_locales(sites, strings):
    problems = []
    for s in sites:
        if s.code is None or s.n_args < 2:  # reported by the test above
            continue
        for lang in LANGS:
            if f"core.{s.code}" not in strings[lang]:
                problems.append(f"{s.where}: core.{s.code} missing in assets/locales/{lang}/")
    _fail(problems, "codes missing from a locale")


def test_translated_words_are_in_both_locales(sites, strings):
    """``field="batch_size"`` is said through ``core.field.batch_size``: both locales need it."""
    problems = [f"{s.where}: core.{param}.{word} missing in assets/locales/{lang}/"
                for s in sites for param, word in s.words.items() for lang in LANGS
                if f"core.{param}.{word}" not in strings[lang]]
    _fail(problems, "translated words missing from a locale")


def test_placeholders_are_passed_at_every_call(sites, strings):
    problems = []
    for s in sites:
        if s.code is None or s.template is None or s.open_kwargs:
            continue
        template = placeholders(s.template)
        if not template <= s.keywords:
            problems.append(f"{s.where}: {s.code}: the template uses {sorted(template - s.keywords)} "
                            "but the call does not pass them")
        for lang in LANGS:
            sentence = strings[lang].get(f"core.{s.code}")
            if sentence is None:
                continue
            used = placeholders(sentence)
            if not used <= s.keywords:
                problems.append(f"{s.where}: {s.code}: the {lang} sentence uses {sorted(used - s.keywords)} "
                                "which the call does not pass")
            if not used <= template:
                problems.append(f"{s.where}: {s.code}: the {lang} sentence uses {sorted(used - template)} "
                                "which the English template does not")
    _fail(problems, "placeholder mismatches")


def test_locale_key_sets_match_and_nothing_is_empty():
    fr, fr_twice = locale("fr")
    en, en_twice = locale("en")
    problems = [f"only in fr: {k}" for k in sorted(fr.keys() - en.keys())]
    problems += [f"only in en: {k}" for k in sorted(en.keys() - fr.keys())]
    problems += [f"defined twice: {k}" for k in fr_twice + en_twice]
    for lang, table in (("fr", fr), ("en", en)):
        problems += [f"{lang}: {k} is empty" for k, v in table.items() if not isinstance(v, str) or not v.strip()]
        problems += [f"{lang}: {k} has a malformed placeholder" for k, v in table.items() if not _formats(v)]
    _fail(problems, "locale key problems")


def _formats(text: str) -> bool:
    try:
        placeholders(text)
        return True
    except ValueError:
        return False


def test_french_and_english_differ_and_look_right(strings):
    fr, en = strings["fr"], strings["en"]
    problems = []
    for key in sorted(fr.keys() & en.keys()):
        if fr[key] == en[key] and re.search(r"[^\W\d_]", fr[key]) and key not in SAME_IN_BOTH:
            problems.append(f"{key}: the French and English sentences are identical")
    for key, text in sorted(en.items()):
        probe = f" {text} "
        for name in FRENCH_NAMES:
            probe = probe.replace(name, "")
        probe = re.sub(r"\{[^{}]*\}", "", probe)
        found = [m for m in FRENCH_MARKERS if m in probe.lower()]
        if found:
            problems.append(f"{key}: the English sentence looks French ({', '.join(repr(f) for f in found)})")
    _fail(problems, "language problems")
