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
    """A first-come-first-served lock whose owner is a token, so a turn can be handed on or seized.

    A release hands the turn straight to the longest waiter and wakes only that one: with four
    cameras, waking all four to find which may go costs three needless thread switches per frame.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: deque[tuple[object, threading.Event]] = deque()
        self._owner: object | None = None
        self._closed = False

    def acquire(self, token: object) -> bool:
        """Wait for ``token``'s turn; False when the gate was closed meanwhile (the run is ending)."""
        with self._lock:
            if self._closed:
                return False
            if self._owner is None and not self._waiting:
                self._owner = token  # the common case, one camera: no queueing at all
                return True
            called = threading.Event()
            self._waiting.append((token, called))
        while True:
            called.wait()
            with self._lock:
                if self._closed or self._owner is token:
                    return not self._closed
                # The watchdog seized the turn between its hand-over and this wake-up: queue again, first.
                called.clear()
                self._waiting.appendleft((token, called))

    def _pass_on(self) -> None:
        """Under the lock: the turn goes to the longest waiter, or to nobody."""
        if self._waiting:
            self._owner, called = self._waiting.popleft()
            called.set()
        else:
            self._owner = None

    def release(self, token: object) -> bool:
        """End ``token``'s turn; False when it was no longer its turn (the watchdog took it)."""
        with self._lock:
            if self._owner is not token:
                return False
            self._pass_on()
            return True

    def hand_over(self, token: object, successor: object) -> bool:
        """Pass ``token``'s turn straight to ``successor`` (a recovery); False when it was not its turn."""
        with self._lock:
            if self._owner is not token:
                return False
            self._owner = successor
            return True

    def seize(self, successor: object) -> None:
        """Give the turn to ``successor`` whoever holds it: the watchdog's move against a hung owner."""
        with self._lock:
            self._owner = successor

    def owned_by(self, token: object) -> bool:
        with self._lock:
            return self._owner is token

    def close(self) -> None:
        """Refuse every waiting and future turn until :meth:`open`."""
        with self._lock:
            self._closed = True
            for _, called in self._waiting:
                called.set()
            self._waiting.clear()

    def open(self) -> None:
        with self._lock:
            self._closed = False
            self._owner = None
