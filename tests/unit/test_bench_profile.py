"""py-spy's collapsed stacks turned into hot spots: per function, and per module."""

from __future__ import annotations

from bench.profile import hot_spots

TOP = (
    "main (sse_gateway/cli.py:39);serve (sse_gateway/server.py:50);"
    "Runner.run (asyncio/runners.py:118)"
)


def test_samples_count_for_the_innermost_module_the_event_loop_called() -> None:
    raw = "\n".join(
        [
            f"{TOP} 50",  # the loop's own C code
            f"{TOP};GatewayHttpProtocol.data_received (sse_gateway/http_protocol.py:123) 20",
            f"{TOP};StreamConnection.uncork (sse_gateway/stream_connection.py:196) 20",
            f"{TOP};StreamEndpoint.end (sse_gateway/stream_route.py:300);"
            "KeyedRef.__init__ (weakref.py:353) 10",
        ]
    )
    spots = hot_spots(raw)
    assert spots["samples"] == 100
    assert dict(spots["module_pct"]) == {
        "asyncio/runners.py": 50.0,
        "sse_gateway/http_protocol.py": 20.0,
        "sse_gateway/stream_connection.py": 20.0,
        "sse_gateway/stream_route.py": 10.0,  # a library it called counts for it
    }
    assert ("Runner.run (asyncio/runners.py)", 50.0) in spots["self_pct"]
