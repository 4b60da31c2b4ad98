"""A Redis URL's password never reaches any text we print, whatever characters it holds.

``urlsplit`` ends the authority at the first ``/``, ``?`` or ``#``, so a generated
password holding one of them used to be cut in two and quoted back in an error
(``port 'pa' is not a number``). The user info is now cut out before anything
parses the rest; these tests hold every text built from a URL (parse errors,
the settings' one line, ``display()``, ``redact_url``) to that, for table cases
and for generated passwords.
"""

from __future__ import annotations

from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectome_core.redaction import redact_text, redact_url
from connectome_core.redis_target import RedisUrlError, parse_redis_url
from connectome_core.settings import RedisSettings, SettingsError, load_settings
from connectome_sse.cli_redis import CliRedisSettings
from connectome_sse.stack.settings import UpSettings
from health_publisher.settings import PublisherSettings
from sse_gateway.settings import GatewaySettings


def fragments(password: str, size: int = 3) -> set[str]:
    """Every piece of ``password`` of ``size`` characters (the whole of a shorter one)."""
    if len(password) <= size:
        return {password}
    return {password[i : i + size] for i in range(len(password) - size + 1)}


def assert_no_fragment(text: str, password: str) -> None:
    leaked = sorted(piece for piece in fragments(password) if piece in text)
    assert not leaked, f"{leaked} of the password in {text!r}"


def outputs(url: str) -> list[str]:
    """Every text a process may print about ``url``: parse error or display, settings line."""
    texts = [redact_url(url), redact_text(f"error: argument {url!r} was odd")]
    try:
        texts.append(parse_redis_url(url).display())
    except RedisUrlError as exc:
        texts.append(str(exc))
    try:
        texts.append(load_settings(RedisSettings, {"REDIS_URL": url}).redis_target().display())
    except SettingsError as exc:
        texts.append(str(exc))
    return texts


# A password with every character that ends urlsplit's authority, and an "@".
NASTY = "Zq7/Vx9?Wk#Jy@Qp+w0"


@pytest.mark.parametrize(
    ("url", "password", "user"),
    [
        ("redis://default:pa/ss+w0rd@127.0.0.1:6379/0", "pa/ss+w0rd", "default"),
        ("redis://default:pa?ss+w0rd@127.0.0.1:6379/0", "pa?ss+w0rd", "default"),
        ("redis://default:pa#ss+w0rd@127.0.0.1:6379/0", "pa#ss+w0rd", "default"),
        (f"redis://:{NASTY}@h:1/2", NASTY, None),
        (f"rediss://app:{NASTY}@h.example:6380", NASTY, "app"),
        (f"redis+sentinel://app:{NASTY}@a:1,b:2/mymaster/1", NASTY, "app"),
        (f"rediss+sentinel://:{NASTY}@a:1/m", NASTY, None),
        (f"unix://app:{NASTY}@/run/redis.sock?db=2", NASTY, "app"),
        (f"unix:///run/redis.sock?db=2&password={quote(NASTY, safe='')}", NASTY, None),
        ("redis://u:p%2Fss%3Fw%23rd@h:1", "p/ss?w#rd", "u"),
    ],
)
def test_a_password_with_url_delimiters_is_the_password(
    url: str, password: str, user: str | None
) -> None:
    target = parse_redis_url(url)
    assert target.password is not None and target.password.get_secret_value() == password
    assert target.username == user
    for text in outputs(url):
        assert_no_fragment(text, password)


@pytest.mark.parametrize(
    ("url", "password"),
    [
        (f"redis://default:{NASTY}@127.0.0.1:99999/0", NASTY),
        (f"redis://default:{NASTY}@127.0.0.1:6379/x", NASTY),
        (f"redis://default:{NASTY}@a:1,b:2/0", NASTY),
        (f"redis://default:{NASTY}@h/0?ssl_cert_reqs=none", NASTY),
        (f"redis://default:{NASTY}@h/0#frag", NASTY),
        (f"redis://default:{NASTY}@", NASTY),
        (f"redis://default:{NASTY}@[::1", NASTY),
        (f"rediss+sentinel://u:{NASTY}@a:1", NASTY),
        (f"redis+sentinel://u:{NASTY}@a:1/bad name/0", NASTY),
        (f"unix://:{NASTY}@relative.sock", NASTY),
        (f"http://u:{NASTY}@h", NASTY),
        (f"redis:/u:{NASTY}@h", NASTY),
        # No "@" at all: nothing says where a password ends, so nothing of the URL is quoted.
        ("redis://default:pa/ss+w0rd", "pa/ss+w0rd"),
        ("redis://default:Zq7Vx9", "Zq7Vx9"),
        # A query password holding "&" or "#": the rest of it must not be named either.
        ("unix:///run/redis.sock?password=Zq7&Vx9=Wk3", "Zq7&Vx9=Wk3"),
        ("unix:///run/redis.sock?password=Zq7#Vx9Wk3", "Zq7#Vx9Wk3"),
        ("unix:///run/redis.sock?password=Zq7&Vx9&Vx9", "Zq7&Vx9&Vx9"),
        ("redis://h/0?password=Zq7&Vx9Wk3=1", "Zq7&Vx9Wk3=1"),
        # A lone user info without ":" that cannot be a user name is somebody's password.
        ("redis://Zq7/Vx9Wk3@h:1/0", "Zq7/Vx9Wk3"),
    ],
)
def test_a_malformed_url_is_refused_without_any_of_its_password(url: str, password: str) -> None:
    with pytest.raises(RedisUrlError) as caught:
        parse_redis_url(url)
    assert "\n" not in str(caught.value)
    with pytest.raises(SettingsError) as line:
        load_settings(RedisSettings, {"REDIS_URL": url})
    assert str(line.value).startswith("REDIS_URL: ")
    for text in outputs(url):
        assert_no_fragment(text, password)


def test_the_settings_line_never_quotes_the_url() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(RedisSettings, {"REDIS_URL": "redis://h:1/x"})
    assert "redis://h:1/x" not in str(caught.value) and "got" not in str(caught.value)


# -- generated passwords -------------------------------------------------------------------
#
# Greek letters never occur in any of our messages, so a password that always holds one
# shows any leak of it; the delimiters are mixed in where they do the most harm.

GREEK = st.characters(min_codepoint=0x3B1, max_codepoint=0x3C9)
PASSWORD_CHARS = st.one_of(
    GREEK,
    st.sampled_from(list("/?#@:+&=!,;[]~ ")),
    st.characters(min_codepoint=0x30, max_codepoint=0x7A),
)
PASSWORDS = st.builds(
    lambda first, rest: first + rest,
    GREEK,
    st.text(PASSWORD_CHARS.filter(lambda c: c != "%"), min_size=0, max_size=24),
)

WELL_FORMED = [
    "redis://default:{}@127.0.0.1:6380/0",
    "rediss://app:{}@h.example:6380",
    "redis+sentinel://app:{}@a:26379,b:26380/mymaster/1",
    "rediss+sentinel://:{}@a:1/m",
    "unix://app:{}@/run/redis.sock?db=2",
]
MALFORMED = [
    "redis://default:{}@127.0.0.1:99999/0",
    "redis://default:{}@h/x",
    "redis://default:{}@a:1,b:2/0",
    "redis://default:{}@h/0?timeout=1",
    "redis://default:{}@h/0#frag",
    "redis://default:{}@",
    "rediss+sentinel://u:{}@a:1",
    "redis+sentinel://u:{}@a:1/bad name/0",
    "unix://:{}@relative.sock",
    "http://u:{}@h",
]


def greek_free(texts: list[str]) -> bool:
    return not any(0x3B1 <= ord(c) <= 0x3C9 for text in texts for c in text)


@settings(max_examples=200, deadline=None)
@given(password=PASSWORDS, template=st.sampled_from(WELL_FORMED))
def test_generated_passwords_parse_whole_and_never_show(password: str, template: str) -> None:
    url = template.format(password)
    target = parse_redis_url(url)
    assert target.password is not None and target.password.get_secret_value() == password
    texts = outputs(url)
    assert greek_free(texts), texts
    # What is printed does not depend on the password at all.
    assert texts == outputs(template.format("reference"))


@settings(max_examples=200, deadline=None)
@given(password=PASSWORDS, template=st.sampled_from(MALFORMED))
def test_generated_passwords_in_malformed_urls_never_show(password: str, template: str) -> None:
    url = template.format(password)
    texts = outputs(url)
    assert greek_free(texts), texts
    assert texts == outputs(template.format("reference"))


@settings(max_examples=200, deadline=None)
@given(password=PASSWORDS)
def test_generated_query_passwords_never_show(password: str) -> None:
    encoded = f"unix:///run/redis.sock?db=1&password={quote(password, safe='')}"
    target = parse_redis_url(encoded)
    assert target.password is not None and target.password.get_secret_value() == password
    raw = f"unix:///run/redis.sock?db=1&password={password}"
    assert greek_free(outputs(encoded) + outputs(raw))


@settings(max_examples=100, deadline=None)
@given(password=PASSWORDS)
def test_a_url_with_no_at_sign_is_never_quoted(password: str) -> None:
    assert greek_free(outputs(f"redis://default:{password}"))


@pytest.mark.parametrize(
    "cls", [RedisSettings, GatewaySettings, PublisherSettings, CliRedisSettings, UpSettings]
)
def test_no_process_settings_echo_the_url(cls: type[RedisSettings]) -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(cls, {"REDIS_URL": f"redis://default:{NASTY}@h:99999/0"})
    assert_no_fragment(str(caught.value), NASTY)


def test_a_password_holding_at_slash_in_a_unix_url_is_user_info_whole() -> None:
    """Found by the property above: the user info of a unix:// URL once ended at its first
    "@/", so with a password like "a@/a" the socket path printed held a piece of it."""
    alpha = "\u03b1"  # greek: what greek_free looks for
    password = f"{alpha}@/{alpha}"
    url = f"unix://:{password}@/run/redis.sock"
    target = parse_redis_url(url)
    assert target.password is not None and target.password.get_secret_value() == password
    assert target.path == "/run/redis.sock"
    assert greek_free(outputs(url))
    assert greek_free(outputs(f"unix://:{password}@relative.sock"))
