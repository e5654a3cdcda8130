"""Token labels for the UI: invisible characters made visible (chips are drawn by explorer.figures.tokens)."""
from __future__ import annotations

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


def token_label(tokenizer, token_id: int) -> str:
    """A readable, unique label for one token id: its text in quotes, then the id."""
    return f"“{visible(tokenizer.decode([token_id]))}” · {token_id}"
