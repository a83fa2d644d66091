"""Connections (DESIGN.md §8): workspaces and their members, and the accounts a workspace
connects — by OAuth 2 (:mod:`.oauth`) or by the network's own credential (:mod:`.accounts`).

The API and the CLI both call these functions; each takes a :class:`.access.Manager` (who
acts) and raises :class:`.access.Refused` (status, stable code, message) when it says no.
"""
