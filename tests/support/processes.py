"""Re-exported from ``connectome_sse.localrun.processes``.

The helpers moved into the package so ``connectome-sse chaos`` runs the same code.
"""

from __future__ import annotations

from connectome_sse.localrun.processes import (
    ManagedProcess,
    console_script,
    wait_pid_gone,
)

__all__ = ["ManagedProcess", "console_script", "wait_pid_gone"]
