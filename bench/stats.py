"""Summaries of raw measurements: percentiles, delivery, medians over repeats. Pure functions."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..1) of already sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def _ms(value: float | None) -> float | None:
    return None if value is None else round(value * 1e3, 2)


def latency_summary(seconds: Iterable[float], prefix: str) -> dict[str, float | None]:
    """p50/p90/p99/max in milliseconds, keyed `<prefix>_p50` ... `<prefix>_max`."""
    values = sorted(seconds)
    return {
        f"{prefix}_p50": _ms(percentile(values, 0.50)),
        f"{prefix}_p90": _ms(percentile(values, 0.90)),
        f"{prefix}_p99": _ms(percentile(values, 0.99)),
        f"{prefix}_max": _ms(values[-1] if values else None),
    }


def delivery_summary(got_per_client: Sequence[int], published: int) -> dict[str, int]:
    """Events lost (published but never received, summed over clients) and clients that lost any."""
    missing = [max(0, published - got) for got in got_per_client]
    return {"lost": sum(missing), "clients_with_loss": sum(1 for m in missing if m)}


def delivered_per_second(delivered: int, first_publish: float, last_receive: float, rate: float):
    """Deliveries over first publish .. last receive plus one publish interval.

    The extra interval makes a system that keeps up score exactly clients x rate.
    """
    if not delivered or last_receive <= 0:
        return None
    return round(delivered / (last_receive - first_publish + 1.0 / rate), 1)


def median(values: Iterable[float | None]) -> float | None:
    """Median of the values that are not None; None when there are none."""
    present = sorted(v for v in values if v is not None)
    if not present:
        return None
    mid = len(present) // 2
    if len(present) % 2:
        return present[mid]
    return (present[mid - 1] + present[mid]) / 2


def ratio(value: float | None, reference: float | None) -> float | None:
    if value is None or reference is None or reference <= 0:
        return None
    return round(value / reference, 2)
