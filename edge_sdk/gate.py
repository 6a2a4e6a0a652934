"""One inference at a time on a shared engine, in the order asked: no camera starves.

Python's own locks make no promise of order: a camera whose thread loops straight back to the
engine could win it again and again. Here turns are granted first come, first served, and the
watchdog can take a turn away from a thread stuck inside the engine.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

LOST = object()  # a turn whose inference failed: the frame is lost, the camera goes on
ABANDONED = object()  # a turn the watchdog gave up on (another thread took over), or the run is ending


class Turn:
    """One thread's use of the engine; ``abandoned`` is called if the watchdog gives up on it."""

    __slots__ = ("abandoned",)

    def __init__(self, abandoned: Callable[[], None] | None = None) -> None:
        self.abandoned = abandoned


class EngineGate:
    """A first-come-first-served lock whose owner is a token, so a turn can be handed on or seized."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._waiting: deque[object] = deque()
        self._owner: object | None = None
        self._closed = False

    def acquire(self, token: object) -> bool:
        """Wait for ``token``'s turn; False when the gate was closed meanwhile (the run is ending)."""
        with self._cond:
            if self._owner is None and not self._waiting and not self._closed:
                self._owner = token  # the common case, one camera: no queueing at all
                return True
            self._waiting.append(token)
            try:
                self._cond.wait_for(lambda: self._closed or (self._owner is None and self._waiting[0] is token))
            finally:
                self._waiting.remove(token)
            if self._closed:
                self._cond.notify_all()
                return False
            self._owner = token
            return True

    def release(self, token: object) -> bool:
        """End ``token``'s turn; False when it was no longer its turn (the watchdog took it)."""
        with self._cond:
            if self._owner is not token:
                return False
            self._owner = None
            self._cond.notify_all()
            return True

    def hand_over(self, token: object, successor: object) -> bool:
        """Pass ``token``'s turn straight to ``successor`` (a recovery); False when it was not its turn."""
        with self._cond:
            if self._owner is not token:
                return False
            self._owner = successor
            return True

    def seize(self, successor: object) -> None:
        """Give the turn to ``successor`` whoever holds it: the watchdog's move against a hung owner."""
        with self._cond:
            self._owner = successor

    def owned_by(self, token: object) -> bool:
        with self._cond:
            return self._owner is token

    def close(self) -> None:
        """Refuse every waiting and future turn until :meth:`open`."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def open(self) -> None:
        with self._cond:
            self._closed = False
            self._owner = None
