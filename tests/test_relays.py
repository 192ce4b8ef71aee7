"""Several relays in SMTP_URL: parsed strictly, tried in order, set aside for everyone.

Set-asides are shared through the real Redis (one test sets one aside from a second
process), process-local without it, and a hostile SMTP_URL gets a ConfigError naming
SMTP_URL, never a traceback and never the password.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import redis
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from service.config import ConfigError, load_settings, parse_smtp_urls
from service.delivery import shared_redis
from service.delivery.relays import Relays, relay_key
from tests.conftest import REPO
from tests.support.net import free_port

SECRET = "S3cr3tPw"
THREE = (
    f"smtp+starttls://news%40nashra.test:{SECRET}1@relay-a.test:587,"
    " smtp://relay-b.test:2525 ,"
    f"smtps://bulk:{SECRET}3@relay-c.test"
)


def _unique_urls(tag: str, n: int = 3) -> str:
    """Relays no other test uses (the process-local set-asides outlive a test)."""
    return ",".join(f"smtp://{tag}-{i}.relay.test:25" for i in range(n))


# ------------------------------------------------------------------ SMTP_URL as a list


def test_smtp_url_lists_relays_in_order(monkeypatch):
    monkeypatch.setenv("SMTP_URL", THREE)
    s = load_settings()
    targets = s.smtp_targets
    assert [(t.security, t.host, t.port) for t in targets] == [
        ("starttls", "relay-a.test", 587),
        ("plain", "relay-b.test", 2525),
        ("ssl", "relay-c.test", 465),
    ]
    assert targets[0].username == "news@nashra.test" and targets[0].password == f"{SECRET}1"
    assert repr(s.smtp) == repr(targets[0])  # old callers get the first relay
    assert SECRET not in repr(targets)


def test_one_relay_is_still_one_relay(monkeypatch):
    monkeypatch.setenv("SMTP_URL", "smtp://127.0.0.1:1025")
    s = load_settings()
    assert len(s.smtp_targets) == 1 and (s.smtp.host, s.smtp.port) == ("127.0.0.1", 1025)


def test_a_comma_in_a_password_is_written_percent_2c():
    (target,) = parse_smtp_urls("smtp+starttls://u:pa%2Css@mail.test:587")
    assert target.password == "pa,ss"


@pytest.mark.parametrize(
    "value",
    [
        "smtp://a.test,,smtp://b.test",  # empty item
        "smtp://a.test,",  # trailing comma
        ",smtp://a.test",
        " , ",
        "",
        "smtp://a.test,http://b.test",  # a bad scheme
        "smtp://a.test,b.test:25",  # no scheme
        "smtp://a.te\x00st",  # NUL
        "smtp://a.test,\nsmtp://b.test",
        "smtp://a.test,smtp://",  # no host
        "smtp://a.test,smtp://b.test:99999",  # port out of range
        "smtp://a.test,smtp://[::1",  # broken IPv6 literal
        "smtp://ho st.test",
        f"smtp://user:{SECRET},x@mail.test",  # a raw comma inside the password
        f"smtp://user:{SECRET}:a,b:c@mail.test",
    ],
)
def test_a_bad_list_is_a_config_error_naming_smtp_url(value):
    with pytest.raises(ConfigError) as err:
        load_settings(smtp_url=value)
    message = str(err.value)
    assert "SMTP_URL" in message
    assert SECRET not in message
    assert "Traceback" not in message


_good = st.builds(
    lambda scheme, host, port, pw: f"{scheme}://u:{SECRET}{pw}@{host}" + (f":{port}" if port else ""),
    st.sampled_from(["smtp", "smtp+starttls", "smtps"]),
    st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z]{2,5}){1,2}", fullmatch=True),
    st.none() | st.integers(1, 65535),
    st.text(alphabet="abcXYZ019-_.~", max_size=6),
)
_hostile = st.one_of(
    st.just(""),
    st.just(" "),
    st.sampled_from(["http", "ftp", "smtp+ssl", "SMTP", "smtp:", "//", "mailto"]).map(lambda s: f"{s}://h.test"),
    st.text(max_size=30),  # anything at all, NUL and friends included
    st.builds(
        lambda junk, host: f"smtp://u:{SECRET}{junk}@{host}",
        st.text(alphabet=":/@#?[]%\x00\r\n ,\\", min_size=1, max_size=4),
        st.sampled_from(["h.test", "", "[::1", "h.test:0x19", "h.test:-1"]),
    ),
)


@hsettings(max_examples=300, deadline=None)
@given(items=st.lists(st.one_of(_good, _hostile), min_size=1, max_size=5),
       sep=st.sampled_from([",", ", ", " ,", ",,"]))
def test_hostile_smtp_url_lists_get_a_clear_error_or_parse_exactly(items, sep):
    value = sep.join(items)
    try:
        s = load_settings(smtp_url=value)
    except ConfigError as err:
        message = str(err)
        assert "SMTP_URL" in message
        assert SECRET not in message  # a message names the relay by position, never quotes it
        return
    # Accepted: every item is a relay, in order, and no repr shows a password.
    targets = s.smtp_targets
    assert len(targets) == len(value.split(","))
    assert repr(s.smtp) == repr(targets[0])
    assert SECRET not in repr(targets) + repr(Relays(s))


def test_relay_set_aside_seconds_setting(monkeypatch):
    assert load_settings().smtp_relay_set_aside_seconds == 60.0
    monkeypatch.setenv("SMTP_RELAY_SET_ASIDE_SECONDS", "0")
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert "SMTP_RELAY_SET_ASIDE_SECONDS" in str(err.value)


# ------------------------------------------------------------------ keys


def test_relay_keys_are_stable_distinct_and_hold_no_password():
    a, b, c, d, e = parse_smtp_urls(
        f"smtp+starttls://u1:{SECRET}@Relay.test:587,smtp://relay.test:25,"
        f"smtp+starttls://u2:{SECRET}@relay.test:587,smtp://[::1]:25,smtp://relay.test"
    )
    assert relay_key(b) == "relay.test:25" == relay_key(e)
    assert relay_key(d) == "[::1]:25"
    assert relay_key(a).startswith("relay.test:587~") and relay_key(a) != relay_key(c)
    assert relay_key(a) == relay_key(parse_smtp_urls("smtp+starttls://u1:other@relay.test:587")[0])
    assert all(SECRET not in relay_key(t) and "u1" not in relay_key(t) for t in (a, b, c, d, e))
    assert Relays.key(b) == relay_key(b)


# ------------------------------------------------------------------ set aside, through Redis


def test_set_aside_is_shared_keeps_the_order_and_ends_with_all_set_aside(redis_url):
    s = load_settings(smtp_url=_unique_urls("shared"))
    first, second = Relays(s), Relays(s)
    a, b, c = first.targets
    assert first.pick() is a and not first.all_set_aside()

    first.set_aside(b, "auth")  # the middle one: the first still leads
    assert second.pick().host == a.host
    first.set_aside(a, "5.7.1")
    assert second.pick().host == c.host  # order kept: a and b set aside, c next
    assert not second.all_set_aside()
    second.set_aside(c, "refused")
    assert first.all_set_aside() and second.all_set_aside()
    assert first.pick() is None

    # In Redis, under the run's key prefix.
    keys = {
        k.decode()
        for k in redis.Redis.from_url(redis_url).scan_iter(match=f"{s.redis_key_prefix}nashra:relay:aside:*")
    }
    assert keys == {f"{s.redis_key_prefix}nashra:relay:aside:{Relays.key(t)}" for t in (a, b, c)}


_OTHER_PROCESS = """
import sys
from service.config import load_settings
from service.delivery.relays import Relays
relays = Relays(load_settings(smtp_url=sys.argv[1]))
relays.set_aside(relays.targets[0], "auth")
print("done", flush=True)
"""


def test_a_relay_set_aside_in_another_process_is_skipped_here(redis_url, tmp_path):
    urls = _unique_urls("process", 2)
    out = subprocess.run(
        [sys.executable, "-c", _OTHER_PROCESS, urls], env={**os.environ, "PYTHONPATH": str(REPO)},
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )
    assert out.stdout.strip().splitlines()[-1:] == ["done"], out.stderr  # after its log line
    here = Relays(load_settings(smtp_url=urls))
    assert here.pick().host == "process-1.relay.test"
    assert list(here.set_aside_for()) == ["process-0.relay.test:25"]


def test_a_set_aside_ends(redis_url):
    s = load_settings(smtp_url=_unique_urls("ends", 2))
    relays = Relays(s)
    a, _ = relays.targets
    relays.set_aside(a, "tls", seconds=0.2)
    assert relays.pick() is not a
    other = Relays(s)
    deadline = time.monotonic() + 20
    while other.pick() is not other.targets[0] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert other.pick() is other.targets[0]


def test_a_longer_set_aside_is_not_shortened(redis_url, monkeypatch):
    monkeypatch.setenv("SMTP_RELAY_SET_ASIDE_SECONDS", "120")
    s = load_settings(smtp_url=_unique_urls("longer", 2))
    relays = Relays(s)
    a = relays.targets[0]
    relays.set_aside(a, "auth")  # the default, 120 s
    relays.set_aside(a, "auth", seconds=1)
    left = relays.set_aside_for()[Relays.key(a)]
    assert 100 < left <= 120
    # Nor in Redis.
    ttl = redis.Redis.from_url(redis_url).pttl(f"{s.redis_key_prefix}nashra:relay:aside:{Relays.key(a)}")
    assert ttl > 100_000


def test_the_log_names_the_relay_not_its_password_or_an_address(redis_url):
    s = load_settings(smtp_url=f"smtp+starttls://news:{SECRET}@logged.relay.test:587,smtp://b.relay.test")
    relays = Relays(s)
    with capture_logs() as logs:
        relays.set_aside(relays.targets[0], "535 5.7.8 <news@nashra.test> authentication failed")
        relays.set_aside(relays.targets[0], "again")  # already set aside here: no second line
    (line,) = [e for e in logs if e["event"] == "smtp.relay_set_aside"]
    assert line["relay"] == Relays.key(relays.targets[0])
    assert line["relays_left"] == 1
    assert "news@nashra.test" not in repr(line) and "[address]" in line["reason"]
    assert SECRET not in repr(logs) and SECRET not in repr(relays)


# ------------------------------------------------------------------ without Redis


def test_without_redis_set_asides_are_process_local():
    s = load_settings(smtp_url=_unique_urls("local", 2))
    assert s.redis_url is None
    first, second = Relays(s), Relays(s)
    a, b = first.targets
    first.set_aside(a, "refused")
    assert second.pick().host == b.host  # one process: its instances agree
    second.set_aside(b, "refused")
    assert first.all_set_aside() and first.pick() is None


def test_unreachable_redis_fails_open_to_process_local_and_logs_once(monkeypatch):
    port = free_port()
    monkeypatch.setattr(shared_redis, "REDIS_RETRY_AFTER", 0.0)  # try Redis at every call
    s = load_settings(smtp_url=_unique_urls("down", 2), redis_url=f"redis://127.0.0.1:{port}/0")
    relays = Relays(s)
    with capture_logs() as logs:
        a, b = relays.targets
        assert relays.pick() is a
        relays.set_aside(a, "refused")
        assert relays.pick() is b
        assert not relays.all_set_aside()
    down = [e for e in logs if e["event"] == "smtp.relays_redis_unavailable"]
    assert len(down) == 1
    assert "127.0.0.1" not in repr(down) and str(port) not in repr(down)
