"""REDIS_URL parsing (every form, the bad ones), redaction, and the shared Redis settings."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from connectome_core.redis_target import RedisTarget, RedisUrlError, parse_redis_url
from connectome_core.settings import RedisSettings, SettingsError, load_settings, to_environ


def secret(value: SecretStr | None) -> str | None:
    return None if value is None else value.get_secret_value()


@pytest.mark.parametrize(
    ("url", "kind", "tls", "addresses", "db", "user", "password"),
    [
        ("redis://127.0.0.1:6379/0", "tcp", False, (("127.0.0.1", 6379),), 0, None, None),
        ("redis://h", "tcp", False, (("h", 6379),), 0, None, None),
        ("redis://h:7000/3", "tcp", False, (("h", 7000),), 3, None, None),
        ("redis://:pw@h:1/", "tcp", False, (("h", 1),), 0, None, "pw"),
        ("redis://app:pw@h:1/2", "tcp", False, (("h", 1),), 2, "app", "pw"),
        ("redis://app@h:1", "tcp", False, (("h", 1),), 0, "app", None),
        ("redis://u:p%40ss%3Aw%2Frd@h:1", "tcp", False, (("h", 1),), 0, "u", "p@ss:w/rd"),
        ("redis://u:p@ss@h:1", "tcp", False, (("h", 1),), 0, "u", "p@ss"),
        ("REDISS://h:6380/1", "tcp", True, (("h", 6380),), 1, None, None),
        ("rediss://u:p@[::1]:6380", "tcp", True, (("::1", 6380),), 0, "u", "p"),
        (
            "redis+sentinel://a:26379,b:26380,c/mymaster",
            "sentinel",
            False,
            (("a", 26379), ("b", 26380), ("c", 26379)),
            0,
            None,
            None,
        ),
        (
            "rediss+sentinel://app:pw@a:1,b:2/mymaster/5",
            "sentinel",
            True,
            (("a", 1), ("b", 2)),
            5,
            "app",
            "pw",
        ),
    ],
)
def test_network_forms(
    url: str,
    kind: str,
    tls: bool,
    addresses: tuple[tuple[str, int], ...],
    db: int,
    user: str | None,
    password: str | None,
) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.tls, target.addresses, target.db) == (kind, tls, addresses, db)
    assert (target.username, secret(target.password)) == (user, password)


def test_sentinel_master_name_and_password() -> None:
    target = parse_redis_url("redis+sentinel://:pw@a:1/my-master.1/2", sentinel_password="sp")
    assert target.is_sentinel and target.master_name == "my-master.1" and target.db == 2
    assert secret(target.sentinel_password) == "sp"
    assert "sp" not in repr(target) and "pw" not in repr(target)


@pytest.mark.parametrize(
    ("url", "path", "db", "user", "password"),
    [
        ("unix:///run/redis.sock", "/run/redis.sock", 0, None, None),
        ("unix:///run/redis.sock?db=4", "/run/redis.sock", 4, None, None),
        ("unix:///run/redis.sock?db=1&password=s%26cret", "/run/redis.sock", 1, None, "s&cret"),
        ("unix://app:pw@/run/redis.sock", "/run/redis.sock", 0, "app", "pw"),
        ("unix:///run/r@dis.sock?username=app", "/run/r@dis.sock", 0, "app", None),
    ],
)
def test_unix_forms(url: str, path: str, db: int, user: str | None, password: str | None) -> None:
    target = parse_redis_url(url)
    assert (target.kind, target.path, target.db) == ("unix", path, db)
    assert (target.username, secret(target.password)) == (user, password)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "not a URL"),
        ("localhost:6379", "not a URL"),
        ("http://h:1", "unknown scheme 'http'"),
        ("redis+cluster://h:1", "unknown scheme"),
        ("redis://", "host is missing"),
        ("redis://h:0", "port is not a number"),
        ("redis://h:70000", "port is not a number in 1..65535"),
        ("redis://h:abc", "port is not a number"),
        ("redis://h/x", "database is not a number"),
        ("redis://h/-1", "database is not a number"),
        ("redis://h/1/2", "/<db> only"),
        ("redis://h bad:1", "not a host name"),
        ("redis://a:1,b:2/0", "several hosts need redis+sentinel"),
        ("redis://h?ssl_cert_reqs=none", "unsupported query parameter 'ssl_cert_reqs'"),
        ("rediss://h#frag", "fragment"),
        ("redis://[::1:6379", "IPv6"),
        ("redis+sentinel://a:1", "master name is missing"),
        ("redis+sentinel://a:1/", "master name is missing"),
        ("redis+sentinel://a:1/m/0/x", "/<master-name>[/<db>] only"),
        ("redis+sentinel://a:1,/m", "host is missing"),
        ("redis+sentinel://a:1/m/x", "database is not a number"),
        ("unix://", "absolute socket path"),
        ("unix://relative.sock", "has no host"),
        ("unix:///s.sock?db=x", "database is not a number"),
        ("unix:///s.sock?timeout=1", "unsupported query parameter 'timeout'"),
        ("unix://:a@/s.sock?password=b", "password is given twice"),
        ("unix:///s.sock?db=1&db=2", "given twice"),
    ],
)
def test_bad_forms_say_why(url: str, why: str) -> None:
    with pytest.raises(RedisUrlError, match=None) as caught:
        parse_redis_url(url)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://app:hunter2@h:1/x",
        "redis://:hunter2@h:70000",
        "redis+sentinel://:hunter2@a:1",
        "unix:///s.sock?password=hunter2&db=x",
        "unix://:hunter2@relative",
    ],
)
def test_errors_never_hold_the_password(url: str) -> None:
    with pytest.raises(RedisUrlError) as caught:
        parse_redis_url(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://h", "redis://h:6379/0"),
        ("redis://app:hunter2@h:1/2", "redis://app:***@h:1/2"),
        ("rediss://:hunter2@[::1]:1", "rediss://:***@[::1]:1/0"),
        ("redis+sentinel://:hunter2@a,b:2/m/1", "redis+sentinel://:***@a:26379,b:2/m/1"),
        ("rediss+sentinel://a:1/m", "rediss+sentinel://a:1/m/0"),
        ("unix:///s.sock?password=hunter2&db=3", "unix://:***@/s.sock?db=3"),
        ("unix://app@/s.sock", "unix://app@/s.sock"),
    ],
)
def test_display_is_redacted(url: str, shown: str) -> None:
    target = parse_redis_url(url)
    assert target.display() == shown == str(target)
    assert "hunter2" not in repr(target)


def test_display_parses_back_to_the_same_place() -> None:
    for url in ("redis://h:1/2", "redis+sentinel://a:1,b:2/m/3", "unix:///s.sock?db=2"):
        target = parse_redis_url(url)
        again = parse_redis_url(target.display())
        assert again.model_dump() == target.model_dump()


def test_client_certificate_needs_both_files() -> None:
    with pytest.raises(RedisUrlError, match="REDIS_TLS_KEY_FILE is not set"):
        parse_redis_url("rediss://h", tls_cert_file="/c.pem")
    with pytest.raises(RedisUrlError, match="REDIS_TLS_CERT_FILE is not set"):
        parse_redis_url("rediss://h", tls_key_file="/k.pem")
    target = parse_redis_url("rediss://h", tls_ca_file="", tls_cert_file="/c", tls_key_file="/k")
    assert (target.tls_ca_file, target.tls_cert_file) == (None, Path("/c"))


def test_target_is_frozen() -> None:
    target = parse_redis_url("redis://h")
    with pytest.raises(ValueError):
        target.db = 3  # type: ignore[misc]
    assert isinstance(target, RedisTarget)


# -- the shared settings (every process's model derives from RedisSettings) ----------------


def test_settings_accept_every_form_and_build_the_target(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    settings = load_settings(
        RedisSettings,
        {
            "REDIS_URL": "rediss+sentinel://:pw@a:1,b:2/m",
            "REDIS_TLS_CA_FILE": str(ca),
            "REDIS_SENTINEL_PASSWORD": "sentinel-pw",
        },
    )
    target = settings.redis_target()
    assert target.tls and target.tls_ca_file == ca and target.master_name == "m"
    assert secret(target.sentinel_password) == "sentinel-pw"
    assert "sentinel-pw" not in repr(settings)


def test_bad_url_is_one_line_naming_redis_url_without_the_password() -> None:
    for url in ("redis://u:hunter2@h:99999", "unix:///s?password=hunter2&x=1"):
        with pytest.raises(SettingsError) as caught:
            load_settings(RedisSettings, {"REDIS_URL": url})
        message = str(caught.value)
        assert message.startswith("REDIS_URL: ") and "\n" not in message
        assert "hunter2" not in message


def test_unreadable_tls_file_names_its_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match=r"^REDIS_TLS_CA_FILE: .*cannot read"):
        load_settings(RedisSettings, {"REDIS_TLS_CA_FILE": str(tmp_path / "nope.pem")})


def test_certificate_without_key_names_the_key(tmp_path: Path) -> None:
    cert = tmp_path / "c.pem"
    cert.write_text("x")
    with pytest.raises(SettingsError, match=r"^REDIS_TLS_KEY_FILE: "):
        load_settings(RedisSettings, {"REDIS_TLS_CERT_FILE": str(cert)})


def test_tls_setting_typo_is_an_error_but_kubernetes_service_variables_are_not() -> None:
    with pytest.raises(SettingsError, match="REDIS_TLS_CA_FLIE: unknown setting"):
        load_settings(RedisSettings, {"REDIS_TLS_CA_FLIE": "/x"})
    k8s = {"REDIS_PORT": "tcp://10.0.0.1:6379", "REDIS_SENTINEL_SERVICE_HOST": "10.0.0.2"}
    assert load_settings(RedisSettings, k8s).redis_url == "redis://127.0.0.1:6379/0"


def test_owned_prefixes_survive_a_subclass_that_sets_its_own() -> None:
    class Child(RedisSettings):
        owned_prefixes = ("SSE_",)

    assert set(Child.all_owned_prefixes()) == {"SSE_", "REDIS_TLS_"}
    with pytest.raises(SettingsError, match="REDIS_TLS_KEYFILE"):
        load_settings(Child, {"REDIS_TLS_KEYFILE": "/x"})


def test_to_environ_passes_the_sentinel_password_itself() -> None:
    settings = load_settings(RedisSettings, {"REDIS_SENTINEL_PASSWORD": "sentinel-pw"})
    environ = to_environ(settings)
    assert environ["REDIS_SENTINEL_PASSWORD"] == "sentinel-pw"
    assert load_settings(RedisSettings, environ) == settings
