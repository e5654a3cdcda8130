"""bertviz's head view and model view as self-contained HTML that works offline.

bertviz writes ``<script src="https://cdnjs...require.min.js">`` and asks
require.js to fetch d3 and jQuery from cdnjs. Here the three libraries are
inlined from ``explorer/static/vendor/`` (filled at set-up by
``scripts/vendor_js.sh`` from the npm registry) and registered as AMD modules
before bertviz's code runs, so the page never touches the network.

The HTML stays small: attention weights are rounded (3 decimals by default,
written without the leading zero) and the caller chooses which layers to keep.

bertviz's own words ("Layer:", "Layers", "Heads", "Layer 3, Head 1") can be
said in the UI's language: ``labels`` replaces each exact fragment of
bertviz's output (escaped for HTML or as a JavaScript string); a fragment a
future bertviz no longer writes is simply left in English.
"""
from __future__ import annotations

import html as _html
import json
import re
from pathlib import Path

import torch

VENDOR_DIR = Path(__file__).resolve().parents[1] / "static" / "vendor"
VENDOR_FILES = ("d3.min.js", "jquery.min.js", "require.js")  # d3 5.7.0, jQuery 2.2.4, require.js 2.3.6
VIEWS = ("head", "model")

_CDN_TAG = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^\"']*require[^\"']*[\"'][^>]*>\s*</script>", re.I)
_CDN_PATH = re.compile(r"(\b(?:d3|jquery)\s*:\s*)'https?://[^']*'")
_HACK_COMMENT = re.compile(r";[ \t]*// HACK:[^\n]*")
_ZERO = re.compile(r"(?<=[\[,])\s*0\.0(?=[,\]])")          # 0.0 -> 0
_LEADING_ZERO = re.compile(r"(?<=[\[,])\s*0\.(?=\d)")  # 0.123 -> .123 (valid JavaScript)


LABELS = ("layer_select", "layers", "heads", "detail_layer", "detail_head")
# (label, exact bertviz fragment, how the label is written there): the HTML part, then the script
_HTML_WORDS = (("layer_select", "Layer: <select", "{} <select"),)
_JS_WORDS = (
    ("heads", '.text("Heads")', ".text({})"),
    ("layers", '.text("Layers")', ".text({})"),
    ("detail_layer", ".text('Layer ' + config.layers", ".text({} + config.layers"),
    ("detail_head", '+ ", Head " + config.heads', "+ {} + config.heads"),
)


def translate(head_html: str, code: str, labels: dict[str, str] | None) -> tuple[str, str]:
    """bertviz's English words replaced by ``labels`` (keys in :data:`LABELS`; missing keys stay English)."""
    if not labels:
        return head_html, code
    for key, fragment, pattern in _HTML_WORDS:
        if labels.get(key):
            head_html = head_html.replace(fragment, pattern.format(_html.escape(labels[key])))
    for key, fragment, pattern in _JS_WORDS:
        if labels.get(key):  # a JSON string is a JavaScript string; "</" cannot close the script
            code = code.replace(fragment, pattern.format(json.dumps(labels[key]).replace("</", "<\\/")))
    return head_html, code


class VendorMissing(RuntimeError):
    """The offline JavaScript files are not installed (run scripts/vendor_js.sh)."""


def vendor_available(vendor_dir: Path = VENDOR_DIR) -> bool:
    return all((vendor_dir / f).is_file() and (vendor_dir / f).stat().st_size > 0 for f in VENDOR_FILES)


def _vendor_scripts(vendor_dir: Path) -> str:
    if not vendor_available(vendor_dir):
        raise VendorMissing(f"missing JavaScript files in {vendor_dir}: run bash scripts/vendor_js.sh")
    parts = []
    # d3 and jQuery first, while no AMD loader exists: they set window.d3 / window.jQuery
    for name in VENDOR_FILES:
        code = (vendor_dir / name).read_text(encoding="utf-8").replace("</script", "<\\/script")
        parts.append(f"<script>\n{code}\n</script>")
    # then hand the globals to require.js under the names bertviz asks for
    parts.append("<script>define('d3', [], function () { return window.d3; });"
                 "define('jquery', [], function () { return window.jQuery; });</script>")
    return "\n".join(parts)


def _rounded(attentions: list[torch.Tensor], decimals: int) -> list[torch.Tensor]:
    scale = 10.0 ** decimals
    # float64 so that tolist() gives short reprs (0.12, not 0.11999999731779099)
    return [(torch.round(a.detach().cpu().double() * scale) / scale)[None] for a in attentions]


def check_layers(layers, n_layers: int) -> list[int]:
    if layers is None:
        return list(range(n_layers))
    out = sorted({int(x) for x in layers})
    if not out:
        raise ValueError("choose at least one layer")
    if out[0] < 0 or out[-1] >= n_layers:
        raise ValueError(f"layers must be between 0 and {n_layers - 1}")
    return out


def bertviz_html(attentions: list[torch.Tensor], tokens: list[str], view: str = "head",
                 layers=None, decimals: int = 3, vendor_dir: Path = VENDOR_DIR,
                 initial_layer: int | None = None, labels: dict[str, str] | None = None) -> str:
    """A complete HTML document drawing bertviz's ``view`` ("head" or "model").

    ``attentions``: n_layers tensors (n_heads, T, T) as in a Trace; ``tokens``:
    T labels; ``layers``: indices of the layers to include (default all);
    ``initial_layer``: the layer the head view opens on (if included);
    ``labels``: bertviz's words in the UI's language (see :func:`translate`).
    """
    from bertviz import head_view, model_view

    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}")
    if not attentions:
        raise ValueError("no attention to draw")
    T = attentions[0].shape[-1]
    if len(tokens) != T:
        raise ValueError(f"{len(tokens)} labels for {T} positions")
    keep = check_layers(layers, len(attentions))
    rounded = _rounded([attentions[i] for i in keep], int(decimals))
    by_layer = {layer: r for layer, r in zip(keep, rounded)}
    # bertviz indexes the full list with include_layers: unused entries only need to exist
    full = [by_layer.get(i, rounded[0]) for i in range(len(attentions))]
    tokens = [str(t) for t in tokens]
    if view == "head":
        out = head_view(full, tokens, include_layers=keep, html_action="return",
                        layer=initial_layer if initial_layer in keep else keep[0])
    else:
        out = model_view(full, tokens, include_layers=keep, display_mode="light", html_action="return")
    body = out.data
    body, n = _CDN_TAG.subn("", body)
    if n != 1:
        raise RuntimeError("unexpected bertviz output: the require.js script tag was not found")
    head, sep, script = body.partition('<script type="text/javascript">')
    if not sep:
        raise RuntimeError("unexpected bertviz output: no inline script")
    script = _CDN_PATH.sub(r"\1'inlined'", script)
    code, _, _tail = script.rpartition("</script>")
    head, code = translate(head, code, labels)
    # bertviz's template marker also sits in a comment on the same line: drop that second copy
    code = _HACK_COMMENT.sub(";", code, count=1)
    code = _LEADING_ZERO.sub(".", _ZERO.sub("0", code)).replace("</", "<\\/")  # tokens cannot close the tag
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        "<style>body{margin:0;padding:4px;background:#fff;color:#111}</style></head><body>\n"
        + _vendor_scripts(vendor_dir) + head + '<script type="text/javascript">' + code + "</script>"
        + "\n</body></html>"
    )


def has_remote_script(html: str) -> bool:
    """True if the HTML would load a script (or an AMD module path) from http(s)."""
    return bool(re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", html, re.I)
                or re.search(r"(?:d3|jquery)\s*:\s*'https?://", html))
