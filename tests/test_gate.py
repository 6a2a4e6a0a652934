"""The engine's gate: turns in the order asked, handed on or seized by token, and let go on close."""

from __future__ import annotations

import threading
import time

from edge_sdk.gate import EngineGate


def _queue_up(gate: EngineGate, names: list[str], order: list[str], *, hold_s: float = 0.0) -> list[threading.Thread]:
    """One thread per name, started one after another so they queue in that order."""
    threads = []
    for name in names:
        def take(name=name) -> None:
            token = object()
            if gate.acquire(token):
                order.append(name)
                time.sleep(hold_s)
                gate.release(token)
            else:
                order.append(f"{name} refused")

        thread = threading.Thread(target=take, daemon=True)
        thread.start()
        threads.append(thread)
        time.sleep(0.05)  # let it reach the queue before the next one
    return threads


def test_turns_go_first_come_first_served():
    gate, holder, order = EngineGate(), object(), []
    assert gate.acquire(holder)
    threads = _queue_up(gate, ["a", "b", "c", "d"], order)
    assert order == []  # all wait while the turn is held
    assert gate.release(holder)
    for thread in threads:
        thread.join(5)
    assert order == ["a", "b", "c", "d"]


def test_four_busy_threads_take_strict_turns():
    gate, counts, stop, order = EngineGate(), [0, 0, 0, 0], threading.Event(), []

    def loop(i: int) -> None:
        while not stop.is_set():
            token = object()
            if not gate.acquire(token):
                return
            counts[i] += 1
            order.append(i)
            time.sleep(0.001)
            gate.release(token)

    threads = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    stop.set()
    gate.close()
    for thread in threads:
        thread.join(5)
    assert max(counts) - min(counts) <= 2, counts  # a thread may finish one turn more as the stop lands
    steady = order[8:40]
    assert all(steady[i] != steady[i + 1] for i in range(len(steady) - 1)), steady  # nobody goes twice in a row


def test_a_seized_turn_cannot_be_released_by_its_old_owner_and_the_queue_waits_for_the_new_one():
    gate, stuck, recovery, order = EngineGate(), object(), object(), []
    assert gate.acquire(stuck)
    threads = _queue_up(gate, ["next"], order)
    gate.seize(recovery)  # the watchdog gives up on the stuck owner
    assert not gate.release(stuck) and not gate.hand_over(stuck, object())
    time.sleep(0.1)
    assert order == [] and gate.owned_by(recovery)
    assert gate.release(recovery)
    threads[0].join(5)
    assert order == ["next"]


def test_a_turn_handed_over_stays_taken_and_close_lets_every_waiter_go():
    gate, failing, recovery, order = EngineGate(), object(), object(), []
    assert gate.acquire(failing)
    assert gate.hand_over(failing, recovery) and gate.owned_by(recovery)
    threads = _queue_up(gate, ["a", "b"], order)
    gate.close()
    for thread in threads:
        thread.join(5)
    assert sorted(order) == ["a refused", "b refused"]
    assert not gate.acquire(object())  # closed until opened again
    gate.open()
    assert gate.acquire(object())
