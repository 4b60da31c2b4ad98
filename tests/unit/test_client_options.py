"""The flags doctor and listen share: one parser, the same headers and TLS trust from both."""

from __future__ import annotations

import argparse
import ssl
from pathlib import Path

import pytest
import trustme

from connectome_sse import client_options
from connectome_sse.cli import main
from connectome_sse.client_options import ClientOptions, parse_cookie


def parsed(*argv: str) -> ClientOptions:
    parser = argparse.ArgumentParser()
    client_options.add_arguments(parser)
    return client_options.from_args(parser.parse_args(list(argv)))


@pytest.mark.parametrize(
    ("given", "cookie"),
    [
        ("sse_token=abc.def-ghi", ("sse_token", "abc.def-ghi")),
        ("session=s3cr3t==", ("session", "s3cr3t==")),  # the first '=' ends the name
        ("abc.def-ghi", ("sse_token", "abc.def-ghi")),  # a bare token: the stream cookie
    ],
)
def test_a_cookie_is_name_equals_value_or_a_bare_stream_token(
    given: str, cookie: tuple[str, str]
) -> None:
    assert parse_cookie(given) == cookie


@pytest.mark.parametrize("given", ["", "=v", "a b=c", "n=v; other=x", "n=line\nbreak", "n=\x7f"])
def test_a_cookie_that_would_break_the_header_is_refused(given: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_cookie(given)


def test_headers_carry_the_token_and_every_cookie() -> None:
    options = parsed("--token", "T", "--cookie", "sse_token=A", "--cookie", "proxy=B")
    assert options.headers() == {"Authorization": "Bearer T", "Cookie": "sse_token=A; proxy=B"}
    assert parsed().headers() == {}


def test_tls_trust_is_the_system_a_file_or_none(tmp_path: Path) -> None:
    assert parsed().verify() is True
    assert parsed("--insecure").verify() is False
    ca = tmp_path / "ca.pem"
    trustme.CA().cert_pem.write_to_path(str(ca))
    assert isinstance(parsed("--cacert", str(ca)).verify(), ssl.SSLContext)


def test_cacert_and_insecure_exclude_each_other() -> None:
    with pytest.raises(SystemExit):
        parsed("--cacert", "x", "--insecure")


@pytest.mark.parametrize("command", ["doctor", "listen"])
def test_both_commands_refuse_a_missing_cacert_with_exit_2(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "http://127.0.0.1:1", "--cacert", "/no/such/ca.pem"]) == 2
    err = capsys.readouterr().err
    assert f"connectome-sse {command}: --cacert: no such file '/no/such/ca.pem'" in err


@pytest.mark.parametrize("command", ["doctor", "listen"])
def test_both_commands_refuse_a_bad_cookie_without_echoing_it(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        main([command, "http://127.0.0.1:1", "--cookie", "n=secret; x"])
    assert exited.value.code == 2
    assert "secret" not in capsys.readouterr().err
