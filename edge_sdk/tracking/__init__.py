"""Tracking and events: persistent identities for detections, and what they do in named zones and
across named lines (``settings``: the configuration; ``values``: tracks, events and counts as
values; ``tracker``: the multi-object tracker; ``scene``: one camera's tracks turned into events
and counts; ``ledger``: open tracks and totals kept across restarts).

Nothing here imports a framework: the tracker is NumPy.
"""
