"""Compute slots: at most as many model computations at once as the cores hold, the others wait their turn.

Thirty students opening the Decoding lab together ask for about 200 s of CPU on a 2-core server. Run all at
once, they share the cores and the interpreter, and every one of them ends after the whole 200 s; run two at a
time, they end one after another, so the first students read their results within seconds and nobody waits
longer than before. Each page's model calls take a slot (:func:`compute_slot`); nothing else does.
"""
from __future__ import annotations

import os
import threading
from contextlib import contextmanager

from explorer import settings

_slots: threading.BoundedSemaphore | None = None
_slots_lock = threading.Lock()


def slot_count() -> int:
    """Computations run at once: the cores divided by the threads one page run computes on."""
    return max(1, (os.cpu_count() or 1) // settings.page_threads())


@contextmanager
def compute_slot():
    """Hold one of the server's compute slots for the block (waiting for one when all are taken)."""
    global _slots
    with _slots_lock:
        if _slots is None:
            _slots = threading.BoundedSemaphore(slot_count())
    with _slots:
        yield
