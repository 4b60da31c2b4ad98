"""A local topology (``connectome_sse.localrun.topology``) running for a fixture."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from connectome_sse.localrun.topology import Topology


@contextmanager
def running(topology: Topology) -> Iterator[Topology]:
    """Started; stopped when the block ends, its logs printed first (pytest shows them
    with a failing test's report)."""
    try:
        topology.start()
        yield topology
    finally:
        print(topology.logs())
        topology.stop()
