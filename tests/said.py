"""What a user reads for a gpt_core error or note, in each UI language (tests' shorthand)."""
import re
from contextlib import contextmanager

import pytest

from explorer.ui.messages import render


def fr(message) -> str:
    return render(message, "fr")


def en(message) -> str:
    return render(message, "en")


@contextmanager
def raises_said(exc_type, pattern: str, lang: str = "fr"):
    """Like ``pytest.raises(exc_type, match=pattern)``, matched against what a ``lang`` user reads."""
    with pytest.raises(exc_type) as info:
        yield info
    text = render(info.value, lang)
    assert re.search(pattern, text), f"{text!r} does not match {pattern!r}"
