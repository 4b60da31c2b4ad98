"""The standard scenarios and the systems each one runs.

A system sits out a scenario only where this machine cannot run it: one process
holds at most 20,000 open files, so d (20,000 streams) and the naive app's c
(a Redis socket per client) are left out; f (50,000) runs 4 workers a server, as
the kernel does not split connections evenly between them. g raises the rate step
by step (`bench.ceiling`); e also runs `gateway-2w-auth` (a bearer token a stream).
"""

from __future__ import annotations

from dataclasses import dataclass

STANDARD_SYSTEMS = ("nchan", "gateway-1w", "gateway-2w", "naive-2w")
# Systems with "-before" run the gateway of an older commit (`--before`) beside this one.
BEFORE_SYSTEMS = ("gateway-2w-before",)
WIDE_SYSTEMS = ("nchan-4w", "gateway-4w", "gateway-4w-before")  # f: 50,000 streams
# Authentication on, a bearer token on every stream: its cost on the connect path (e).
AUTH_SYSTEMS = ("gateway-2w-auth",)
# The least any Python server on uvloop pays to open a stream (bench.floor_app), and the
# same bare stream under granian, whose accept and parsing are Rust (bench.granian_floor).
FLOOR_SYSTEMS = ("floor-2w", "granian-2w")
ALL_SYSTEMS = (*STANDARD_SYSTEMS, "nchan-4w", "gateway-4w", *AUTH_SYSTEMS, *FLOOR_SYSTEMS)


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    clients: int
    events: int
    rate: float
    systems: tuple[str, ...] = (*STANDARD_SYSTEMS, *BEFORE_SYSTEMS)
    payload_bytes: int = 128
    storm: bool = False
    bystanders: int = 0  # storm: streams kept open through it (on top of those that reopen)
    streams_per_process: int | None = None  # load-client split; None: the --option's
    ceiling_rates: tuple[float, ...] = ()  # g: publish rates stepped through, in order
    step_s: float = 3.0  # g: seconds of publishing per step
    step_drain_s: float = 5.0  # g: after a step's last publish, what has not come is lost
    ceiling_p99_ms: float = 100.0  # g: a step whose fan-out p99 passes this is too fast

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
            systems=("nchan", "gateway-1w", "gateway-2w", *BEFORE_SYSTEMS),
        ),
        Scenario(
            "d",
            "20,000 clients held open, 10 events at 1/s",
            20000,
            10,
            1.0,
            systems=("nchan", "gateway-2w", *BEFORE_SYSTEMS),
        ),
        Scenario(
            "e",
            "reconnect storm: 5,000 of 6,000 clients reconnect at once (twice, the second "
            "under events at 10/s), then 10 events at 5/s",
            6000,
            10,
            5.0,
            systems=(*STANDARD_SYSTEMS, *BEFORE_SYSTEMS, *AUTH_SYSTEMS, *FLOOR_SYSTEMS),
            storm=True,
            bystanders=1000,
        ),
        Scenario(
            "f",
            "50,000 clients held open, 6 events at 1 every 10 s",
            50000,
            6,
            0.1,
            systems=WIDE_SYSTEMS,
        ),
        Scenario(
            "g",
            "ceiling: 2,000 clients, the rate raised 1.4x every 3 s until p99 > 100 ms or a loss",
            2000,
            0,  # each step publishes rate x step_s events
            25.0,
            systems=("nchan", "gateway-1w", "gateway-2w", *BEFORE_SYSTEMS),
            streams_per_process=1000,  # one client process alone would be the ceiling
            ceiling_rates=(25, 35, 50, 71, 100, 141, 200, 283, 400, 566, 800, 1131, 1600),
        ),
    )
}
