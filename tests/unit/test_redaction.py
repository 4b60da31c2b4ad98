"""``redact_url``: no password of a Redis URL survives into a log line."""

from __future__ import annotations

import pytest

from connectome_core.redaction import redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@h:6379/0", "redis://user:***@h:6379/0"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://s3cret@h:6380", "rediss://***@h:6380"),
        ("unix:///run/redis.sock?db=2&password=s3cret", "unix:///run/redis.sock?db=2&password=***"),
        ("unix:///run/redis.sock?Password=s3cret", "unix:///run/redis.sock?Password=***"),
        ("redis://u:s3cret@h:1/0?password=s3cret", "redis://u:***@h:1/0?password=***"),
        (
            "redis+sentinel://u:s3cret@a:1,b:2/mymaster/0",
            "redis+sentinel://u:***@a:1,b:2/mymaster/0",
        ),
        ("redis://h:6379/0", "redis://h:6379/0"),
        ("unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ],
)
def test_regression_every_password_form_is_masked(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "s3cret" not in redact_url(url)


def test_an_unparseable_url_is_not_echoed() -> None:
    assert "s3cret" not in redact_url("redis://u:s3cret@[::1")
