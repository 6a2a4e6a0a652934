"""A plugin decoder that passes an update's trial run and then fails: it proves the automatic rollback."""

from __future__ import annotations

from edge_sdk.decoders.classification import decode as classify

calls = 0
GOOD_CALLS = 3 + 5  # the runtime's trial run, then a few good frames of the probation


def decode(outputs, context):
    global calls
    calls += 1
    if calls > GOOD_CALLS:
        raise RuntimeError("flaky decoder gave up")
    return classify(outputs, context)
