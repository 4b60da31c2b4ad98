"""Names of ``connectome_sse.localrun.processes``, for the few modules that still import them
from here; new code imports them from there."""

from __future__ import annotations

from connectome_sse.localrun.processes import console_script

__all__ = ["console_script"]
