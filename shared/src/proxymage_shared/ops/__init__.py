"""Operator tools: the `proxymage` console script (dead letters: list, show, replay, purge)."""
