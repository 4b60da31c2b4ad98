"""The standard scenarios of issue 6 and the systems each one runs.

A system is left out of a scenario only where it cannot take part on this
machine: the per-process open-file limit is 20,000, so one process cannot hold
20,000 streams (d), and the naive app needs a Redis connection per client
(c: 10,000 streams + 10,000 Redis sockets).
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_SYSTEMS = ("nchan", "gateway-1w", "gateway-2w", "naive-2w")


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    clients: int
    events: int
    rate: float
    systems: tuple[str, ...] = ALL_SYSTEMS
    payload_bytes: int = 128
    storm: bool = False

    @property
    def publish_s(self) -> float:
        return self.events / self.rate


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario("a", "1,000 clients, 200 events at 20/s", 1000, 200, 20.0),
        Scenario("b", "5,000 clients, 100 events at 10/s", 5000, 100, 10.0),
        Scenario(
            "c",
            "10,000 clients, 20 events at 2/s",
            10000,
            20,
            2.0,
            systems=("nchan", "gateway-1w", "gateway-2w"),
        ),
        Scenario(
            "d",
            "20,000 clients held open, 10 events at 1/s",
            20000,
            10,
            1.0,
            systems=("nchan", "gateway-2w"),
        ),
        Scenario(
            "e",
            "reconnect storm: 5,000 clients reconnect at once, then 10 events at 5/s",
            5000,
            10,
            5.0,
            storm=True,
        ),
    )
}
