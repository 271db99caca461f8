"""Deciding where a call goes, and calling it there.

Imports nothing of the project's own: the routing decision is pure and testable without a
server, and the provider client sits behind one small interface.
"""
