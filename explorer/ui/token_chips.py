"""Coloured token chips over the exact characters of the text (HTML, no JS)."""
from __future__ import annotations

import html

PALETTE = ["#fde2a7", "#c7e9c0", "#c6dbef", "#fcc5c0", "#dadaeb", "#fdd0a2", "#d9f0d3", "#f2e1ee"]


def visible(text: str) -> str:
    """Make invisible characters visible: control pictures for C0 controls, ↵ for newlines."""
    out = []
    for c in text:
        o = ord(c)
        if c == "\n":
            out.append("↵\n")
        elif c == "\t":
            out.append("⇥")
        elif o < 0x20:
            out.append(chr(0x2400 + o))
        elif o == 0x7F:
            out.append("␡")
        else:
            out.append(c)
    return "".join(out)


def chips_html(pieces, text: str, show_ids: bool = False) -> str:
    """One chip per token; empty-span tokens (UTF-8 continuation bytes) appear as a thin marker."""
    chips = []
    for i, p in enumerate(pieces):
        segment = text[p.start:p.end]
        colour = "#e0e0e0" if p.special else PALETTE[i % len(PALETTE)]
        title = f"id {p.id} · {p.raw!r} · {p.bytes.hex(' ')}"
        label = html.escape(visible(segment)) if segment else "·"
        border = "border:1px dashed #888;" if (p.byte_fallback or not segment) else ""
        sub = f"<sub style='color:#555;font-size:0.7em'>{p.id}</sub>" if show_ids else ""
        chips.append(
            f"<span title='{html.escape(title, quote=True)}' style='background:{colour};{border}"
            f"border-radius:4px;padding:1px 2px;margin:0 1px;unicode-bidi:isolate'>{label}{sub}</span>"
        )
    return (
        "<div dir='auto' style='font-family:ui-monospace,Menlo,Consolas,monospace;line-height:2.1;"
        "white-space:pre-wrap;word-break:break-word;color:#111'>" + "".join(chips) + "</div>"
    )


def token_label(tokenizer, token_id: int) -> str:
    """A readable, unique label for one token id: its text in quotes, then the id."""
    return f"“{visible(tokenizer.decode([token_id]))}” · {token_id}"
