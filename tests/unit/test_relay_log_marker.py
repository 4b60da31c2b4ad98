"""The event log's id marker on ``sse:log:ids`` reaches the gateway through ``PSUBSCRIBE sse:*``:
the relay must ignore it silently, neither counted as dropped nor logged, nor relayed."""

from __future__ import annotations

import logging

import pytest

from connectome_core.event_log import LOG_ID_CHANNEL
from sse_gateway.hub import Hub
from sse_gateway.metrics import GatewayMetrics
from sse_gateway.relay import Relay
from sse_gateway.source import MemorySource
from tests.support.subscribers import Recorder


def dropped(metrics: GatewayMetrics, reason: str) -> float:
    assert metrics.registry is not None
    value = metrics.registry.get_sample_value("sse_events_dropped_total", {"reason": reason})
    return value or 0.0


def test_regression_the_log_marker_is_not_counted_as_a_bad_event_name(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub, client, metrics = Hub(), Recorder(), GatewayMetrics()
    relay = Relay(hub, MemorySource(), metrics, max_event_bytes=1000, ping_interval=60)
    with hub.subscription(client), caplog.at_level(logging.DEBUG):
        relay.on_message(LOG_ID_CHANNEL, b"1700000000000-0 deploy")
        relay.on_message("sse:deploy", b"v1.2 rolled out")
        relay.on_message("sse:bad name", b"x")  # the check still counts real bad names
    assert dropped(metrics, "bad_event_name") == 1.0
    assert len(client.frames) == 1 and client.frames[0].endswith(b"data: v1.2 rolled out\n\n")
    assert LOG_ID_CHANNEL not in caplog.text
