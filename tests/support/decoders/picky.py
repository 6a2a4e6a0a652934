"""A plugin decoder that cannot handle wide frames: it passes an update's trial run, then raises on
the live frames of a camera whose frames are wider than ``MAX_WIDTH`` (what the model sees there is
stretched beyond what it was built for). It proves a rollout's abort: the devices with the wide
camera fail their probation for real, the others accept the update."""

from __future__ import annotations

from edge_sdk.decoders.classification import decode as classify

MAX_WIDTH = 300
TRIAL_CALLS = 3  # the runtime's trial run (edge_sdk.ota.update.TRIAL_FRAMES) on the newest frame

calls = 0


def decode(outputs, context):
    global calls
    calls += 1
    if calls > TRIAL_CALLS + 2 and context.placement.source_width > MAX_WIDTH:
        raise RuntimeError(f"picky decoder: frames {context.placement.source_width} pixels wide are not supported")
    return classify(outputs, context)
