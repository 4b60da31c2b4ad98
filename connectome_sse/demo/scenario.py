"""A simulated connectome engine's behaviour, as pure code: time in, signal entries out.

Calm stretches and bursts, and every ``violation_every`` seconds one misbehaviour
(epoch mismatch, query write, stall, DMZ violation; docs/cli.md, "demo-engine").
The same seed gives the same run, whatever the wall clock.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

TICKS_PER_SECOND = {"pause": 0.0, "x1": 1.0, "x2": 2.0, "x3": 3.0}
VIOLATIONS = ("async_epoch_mismatch", "query_write_attempts", "stall", "dmz_violation_attempts")
INTERRUPT_REASONS = ("spoken", "active_changed", "active_deactivated", "contradicts_visible")
PLACES = ("atrium", "library", "harbour", "observatory", "cellar")
CONCEPTS = (
    "door_locked",
    "guard_asleep",
    "key_in_drawer",
    "lamp_lit",
    "letter_forged",
    "ship_departed",
    "witness_lied",
    "clock_stopped",
    "map_torn",
    "bell_rang",
)

Entry = dict[str, str]


@dataclass(frozen=True)
class DemoConfig:
    speed: str = "x1"
    tick_rate: float = 2.0  # ticks per second at x1
    violation_every: float = 30.0  # 0: never misbehave
    stall_seconds: float = 14.0  # 0: skip stalls in the cycle
    seed: int = 0
    playthrough_id: str = ""


def _fmt(value: float) -> str:
    return f"{value:.3f}"


class DemoScenario:
    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.rng = random.Random(config.seed)
        self.playthrough_id = config.playthrough_id or f"pt-{self.rng.randrange(16**6):06x}"
        self.place_id = self.rng.choice(PLACES)
        self.tick = 0
        self.steps = 0
        self.burst = False
        self.phase_ends = self.rng.uniform(15, 25)
        self.plateau_started = 0.0
        self.stall_until = -1.0
        self.violation_index = 0
        self.next_violation = config.violation_every / 2 if config.violation_every > 0 else None
        self.moments = 0
        self.last_event = ""

    @property
    def period(self) -> float:
        """Seconds between steps: one step per tick, or one a second while paused."""
        rate = TICKS_PER_SECOND.get(self.config.speed, 1.0) * self.config.tick_rate
        return 1.0 / rate if rate > 0 else 1.0

    def stalled(self, t: float) -> bool:
        return t < self.stall_until

    def step(self, t: float) -> list[Entry]:
        """The entries the engine writes at ``t`` seconds since it started."""
        self.last_event = ""
        entries: list[Entry] = []
        if self.stalled(t):
            # Silence; a misbehaviour that falls due now comes right after the stall.
            return []
        if self.next_violation is not None and t >= self.next_violation:
            entries.extend(self._misbehave(t))
            if self.stalled(t):
                return []
        if t >= self.phase_ends:
            entries.extend(self._switch_phase(t))
        self.steps += 1
        if self.config.speed != "pause":
            self.tick += 1
        entries.append(
            {
                "kind": "tick",
                "tick": str(self.tick),
                "speed": self.config.speed,
                "playthrough_id": self.playthrough_id,
                "place_id": self.place_id,
            }
        )
        entries.append({"kind": "sink_size", "value": str(self._sink_size())})
        changed = self.rng.random() < (0.45 if self.burst else 0.04)
        if changed:
            self.plateau_started = t
        entries.append({"kind": "focus_change", "changed": "1" if changed else "0"})
        if self.rng.random() < (0.08 if self.burst else 0.01):
            entries.append(self._interrupt(self.rng.choice(INTERRUPT_REASONS)))
        if self.steps % 2 == 0:
            entries.append({"kind": "plateau", "seconds": _fmt(t - self.plateau_started)})
        if self.steps % 3 == 0:
            entries.append(self._pressure())
        if self.steps % 5 == 0:
            entries.append(self._neighborhood())
        return entries

    def _misbehave(self, t: float) -> list[Entry]:
        assert self.next_violation is not None
        kinds = [v for v in VIOLATIONS if v != "stall" or self.config.stall_seconds > 0]
        kind = kinds[self.violation_index % len(kinds)]
        self.violation_index += 1
        self.next_violation += self.config.violation_every
        self.last_event = kind
        if kind == "stall":
            self.stall_until = t + self.config.stall_seconds
            return []
        return [{"kind": "counter", "name": kind, "by": "1"}]

    def _switch_phase(self, t: float) -> list[Entry]:
        self.burst = not self.burst
        self.phase_ends = t + (self.rng.uniform(5, 10) if self.burst else self.rng.uniform(15, 25))
        if self.burst:
            self.plateau_started = t
            if self.rng.random() < 0.4:
                self.place_id = self.rng.choice(PLACES)
            return [self._interrupt("active_changed")]
        return []

    def _interrupt(self, reason: str) -> Entry:
        self.moments += 1
        return {
            "kind": "interrupt",
            "reason": reason,
            "moment_id": f"m-{self.moments}",
            "age_ticks": "0",
        }

    def _sink_size(self) -> int:
        mean, spread = (22.0, 7.0) if self.burst else (5.0, 1.5)
        return max(0, round(self.rng.gauss(mean, spread)))

    def _pressure(self) -> Entry:
        low, high = (0.45, 0.9) if self.burst else (0.05, 0.25)
        contradiction = self.rng.uniform(low, high)
        count = self.rng.randint(3, 5)
        shares = [self.rng.random() + 0.1 for _ in range(count)]
        total = sum(shares)
        edges = []
        for share in sorted(shares, reverse=True):
            a, b = self.rng.sample(CONCEPTS, 2)
            edges.append(
                {
                    "from": a,
                    "to": b,
                    "polarity": round(self.rng.uniform(-1.0, -0.2), 3),
                    "strength": round(self.rng.uniform(0.3, 1.0), 3),
                    "confidence": round(self.rng.uniform(0.4, 1.0), 3),
                    "contrib": round(contradiction * share / total, 3),
                }
            )
        return {
            "kind": "pressure",
            "contradiction": _fmt(contradiction),
            "top_edges": json.dumps(edges, separators=(",", ":")),
        }

    def _neighborhood(self) -> Entry:
        mean, spread = (120.0, 30.0) if self.burst else (40.0, 5.0)
        nodes = max(1, round(self.rng.gauss(mean, spread)))
        edges = round(nodes * self.rng.uniform(1.5, 3.0))
        return {"kind": "neighborhood", "nodes": str(nodes), "edges": str(edges)}
