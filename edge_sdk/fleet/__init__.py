"""The fleet side: consumers that share a fleet's stream, stores that keep it, rollouts that update it.

Nothing here runs on a device; it imports no inference engine and no framework.
"""
