"""Exceptions raised by gpt_core.

Every message is a complete sentence that can be shown to a student as is
(the app prints ``str(err)`` and never a stack trace).
"""
from __future__ import annotations

__all__ = ["GPTCoreError", "HubUnavailable", "InvalidInput"]


class GPTCoreError(Exception):
    """Base class: the message is a sentence a user can read."""


class HubUnavailable(GPTCoreError):
    """The Hugging Face hub cannot be reached and the asset is not cached."""


class InvalidInput(GPTCoreError, ValueError):
    """User input rejected with a readable reason.

    Also a ``ValueError``, so generic ``except ValueError`` code keeps working.
    """
