"""Signed model updates: ed25519 keys and signatures, safe bundle archives, and the on-device store."""
