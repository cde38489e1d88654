"""The error of a federation that cannot start or cannot go on (configuration mistakes are ``ValueError``)."""

from __future__ import annotations


class FederationError(RuntimeError):
    """A federation cannot start (a node did not say which client it is), or a round could not produce
    a usable aggregate (fewer usable replies than ``min_replies``, no usable evaluation reply)."""
