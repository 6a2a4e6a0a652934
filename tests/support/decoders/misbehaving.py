"""A plugin decoder for the watchdog tests that hangs or fails on cue.

A decoder runs inside the inference stage the watchdog times, so a hang or a failure here is one
the runtime must survive, exactly as one in an engine's native code. In-process tests set ``plan``;
an ``edge-sdk run`` child reads ``EDGE_SDK_TEST_DECODER``: ``fail-same`` (every call, one message)
or ``fail-new`` (every call, a new message).
"""

from __future__ import annotations

import os
import threading

from edge_sdk.decoders.classification import decode as classify

plan: dict = {"hang_at": set(), "fail": os.environ.get("EDGE_SDK_TEST_DECODER", "").removeprefix("fail-") or None}
release = threading.Event()  # set by a test's teardown, so a hung call ends and its thread with it
calls = 0


def reset(*, hang_at: set[int] = frozenset(), fail: str | None = None) -> None:
    global calls
    calls = 0
    plan["hang_at"], plan["fail"] = set(hang_at), fail
    release.clear()


def decode(outputs, context):
    global calls
    calls += 1
    if calls in plan["hang_at"]:
        release.wait()
    if plan["fail"] == "same":
        raise RuntimeError("the decoder's device went away")
    if plan["fail"] == "new":
        raise RuntimeError(f"the decoder's device went away (call {calls})")
    return classify(outputs, context)
