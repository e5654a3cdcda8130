"""Errors and notes as stable codes.

gpt_core never speaks to a page in a human language. Every error (and every
note a function returns, such as "the prompt was cut") is a :class:`Message`:
a stable ``code`` such as ``"data.empty_file"``, its ``params``, and a plain
English ``text`` template kept as a fallback for notebook users.

The app turns ``code`` + ``params`` into a sentence through its locale files
(``assets/locales/<lang>/core_*.json``, key ``core.<code>``), in the user's
language. A test walks every code raised in gpt_core and checks that both
locales have it.

    >>> raise InvalidInput("decoding.bad_top_k", "top_k must be at least 1 (got {k}).", k=0)
"""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Message", "GPTCoreError", "HubUnavailable", "InvalidInput", "note"]


@dataclass(frozen=True)
class Message:
    """A code, its parameters and an English fallback template (``text.format(**params)``)."""

    code: str
    text: str
    params: dict = field(default_factory=dict)

    def __str__(self) -> str:
        try:
            return self.text.format(**self.params)
        except (KeyError, IndexError, ValueError):
            return self.text


def note(code: str, text: str, /, **params) -> Message:
    """A note returned to the caller (not raised): same shape as an error."""
    return Message(code, text, params)


class GPTCoreError(Exception):
    """Base class: ``code`` and ``params`` for the app, ``str(err)`` in English for a notebook."""

    def __init__(self, code: str, text: str, /, **params):
        self.message = Message(code, text, params)
        super().__init__(str(self.message))

    @property
    def code(self) -> str:
        return self.message.code

    @property
    def params(self) -> dict:
        return self.message.params


class HubUnavailable(GPTCoreError):
    """The Hugging Face hub cannot be reached and the asset is not cached."""


class InvalidInput(GPTCoreError, ValueError):
    """User input rejected with a readable reason.

    Also a ``ValueError``, so generic ``except ValueError`` code keeps working.
    """

