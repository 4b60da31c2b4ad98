"""Names of ``connectome_sse.localrun.wait``, for the few modules that still import them
from here; new code imports them from there."""

from __future__ import annotations

from connectome_sse.localrun.wait import async_wait_for, wait_for

__all__ = ["async_wait_for", "wait_for"]
