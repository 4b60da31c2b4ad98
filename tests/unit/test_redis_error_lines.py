"""Redis error texts in repeated log lines are short: a first sentence only."""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError

from connectome_core.redis_connect import describe_error, short_error
from connectome_core.redis_target import parse_redis_url

# What a protected-mode Redis answers a client that is not on loopback (850 characters).
DENIED = (
    "DENIED Redis is running in protected mode because protected mode is enabled and no "
    "password is set for the default user. In this mode connections are only accepted from "
    "the loopback interface. If you want to connect from external computers to Redis you may "
    "adopt one of the following solutions: 1) Just disable protected mode sending the command "
    "'CONFIG SET protected-mode no' from the loopback interface by connecting to Redis from "
    "the same host the server is running, however MAKE SURE Redis is not publicly accessible "
    "from internet if you do so. Use CONFIG REWRITE to make this change permanent. 2) "
    "Alternatively you can just disable the protected mode by editing the Redis configuration "
    "file, and setting the protected mode option to 'no', and then restarting the server. 3) "
    "If you started the server manually just for testing, restart it with the "
    "'--protected-mode no' option. 4) Set up an authentication password for the default user."
)


def test_a_paragraph_is_cut_to_its_first_sentence() -> None:
    line = short_error(RedisConnectionError(DENIED))
    assert line == (
        "ConnectionError: DENIED Redis is running in protected mode because protected mode is "
        "enabled and no password is set for the default user."
    )
    target = parse_redis_url("redis://:pw@10.0.0.5:6379/0")
    described = describe_error(RedisConnectionError(DENIED), target)
    assert len(described) < 250 and "solutions" not in described and "pw" not in described


def test_a_short_text_is_kept_whole() -> None:
    text = "Error 111 connecting to 127.0.0.1:6379. Connection refused."
    assert short_error(RedisConnectionError(text)) == f"ConnectionError: {text}"


def test_a_long_text_without_sentences_is_cut_at_the_limit() -> None:
    line = short_error(RedisConnectionError("x" * 1000))
    assert len(line) <= len("ConnectionError: ") + 120 and line.endswith("…")
