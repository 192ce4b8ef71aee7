"""The per-message path made cheaper (bench/profile_send.py) still says and does the same:
reader tokens in itsdangerous' format (old links keep working), the SMTP addresses
smtplib would write, the lane's sender threads, metrics across a fork, the Date header
and the escaped links of the MIME assembly."""

from __future__ import annotations

import email.utils
import os
import random
import smtplib
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from itsdangerous import URLSafeTimedSerializer
from markupsafe import escape
from structlog.testing import capture_logs

from service.config import get_settings
from service.db import session_scope
from service.delivery.smtp import quoteaddr
from service.delivery.smtp_pool import Senders
from service.models import Subscriber, SubscriberStatus
from service.rendering import mime
from service.subscribers import tokens
from service.subscribers.tokens import PURPOSES, BadToken, make_token, read_token
from tests.support.readers import reader

REPO = Path(__file__).resolve().parent.parent

# ------------------------------------------------------------------ tokens


def _itsdangerous(purpose: str, value, secret: str | None = None) -> str:
    """A token as every release before this one made it: itsdangerous itself."""
    return URLSafeTimedSerializer(secret or get_settings().secret_key, salt=f"nashra.{purpose}").dumps(value)


@pytest.mark.parametrize("purpose", PURPOSES)
def test_a_token_is_byte_for_byte_the_one_itsdangerous_makes(purpose, monkeypatch):
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)  # both read the clock: the same second
    for subscriber_id, version in [(1, 1), (42, 7), (6789, 123), (2**31 + 5, 2), (2**62, 99), (0, 0)]:
        ours = make_token(purpose, subscriber_id, version)
        assert ours == _itsdangerous(purpose, [subscriber_id, version])
        assert read_token(purpose, ours) == (subscriber_id, version)


@pytest.mark.parametrize("purpose", PURPOSES)
def test_tokens_already_in_inboxes_still_verify(purpose, monkeypatch):
    """Links mailed before: itsdangerous' own tokens, a year old, and one whose payload
    itsdangerous chose to zlib-compress (a long repetitive id) — the fast path never
    compresses, and reads both."""
    year_ago = time.time() - 365 * 24 * 3600
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: year_ago)
        old = _itsdangerous(purpose, [1234, 5])
        squeezed = _itsdangerous(purpose, [1111111111111111111, 1])
    assert squeezed.startswith(".")  # compressed, as itsdangerous writes it
    max_age = 400 * 24 * 3600 if purpose == "confirm" else None  # confirm links expire after 7 days
    assert read_token(purpose, old, max_age=max_age) == (1234, 5)
    assert read_token(purpose, squeezed, max_age=max_age) == (1111111111111111111, 1)
    fresh = make_token(purpose, 1111111111111111111, 1)
    assert not fresh.startswith(".") and read_token(purpose, fresh) == (1111111111111111111, 1)
    if purpose == "confirm":
        with pytest.raises(BadToken, match="expired"):
            read_token(purpose, old)


def test_tokens_stay_unforgeable_and_bound_to_purpose_and_key(monkeypatch):
    token = make_token("unsubscribe", 77, 3)
    payload, stamp, sig = token.split(".")
    other_sig = "A" + sig[1:] if sig[0] != "A" else "B" + sig[1:]
    forged_payload = tokens._b64(b"[78,3]").decode()
    for bad in (f"{payload}.{stamp}.{other_sig}", f"{forged_payload}.{stamp}.{sig}", token[:-1], token + "x",
                f"{payload}.{stamp}"):
        with pytest.raises(BadToken):
            read_token("unsubscribe", bad)
    with pytest.raises(BadToken):
        read_token("preferences", token)  # another purpose's salt, another key
    monkeypatch.setenv("SECRET_KEY", "another-secret-key-0123456789abcdef")
    from service.config import reset_settings

    reset_settings()
    with pytest.raises(BadToken):
        read_token("unsubscribe", token)
    assert read_token("unsubscribe", make_token("unsubscribe", 77, 3)) == (77, 3)


def test_values_the_fast_path_does_not_know_go_through_itsdangerous(monkeypatch):
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now)
    assert make_token("unsubscribe", True, 1) == _itsdangerous("unsubscribe", [True, 1])
    with pytest.raises(BadToken):
        read_token("unsubscribe", make_token("unsubscribe", True, 1))  # a bool is no subscriber id
    with pytest.raises(ValueError, match="unknown token purpose"):
        make_token("delete-everything", 1, 1)


@pytest.fixture
def client(pg_env, queue_redis):
    from service.web.app import create_app

    with TestClient(create_app()) as c:
        yield c


def _active() -> Subscriber:
    with session_scope() as s:
        sub = reader(s, "reader@example.com", status=SubscriberStatus.active, frequency="daily",
                     alerts=True, sections=[])
        return sub


def test_the_readers_routes_open_old_links_and_new_ones(client, monkeypatch):
    sub = _active()
    with monkeypatch.context() as m:
        month_ago = time.time() - 30 * 24 * 3600
        m.setattr(time, "time", lambda: month_ago)
        old_prefs = _itsdangerous("preferences", [sub.id, sub.token_version])
        old_unsub = _itsdangerous("unsubscribe", [sub.id, sub.token_version])
    assert client.get(f"/preferences/{old_prefs}").status_code == 200
    assert client.get(f"/preferences/{make_token('preferences', sub.id, sub.token_version)}").status_code == 200
    assert client.get(f"/unsubscribe/{make_token('unsubscribe', sub.id, sub.token_version)}").status_code == 200
    bare = TestClient(client.app)  # a mail client's RFC 8058 one-click POST, with a link mailed a month ago
    resp = bare.post(f"/unsubscribe/{old_unsub}", content=b"List-Unsubscribe=One-Click",
                     headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert resp.status_code == 200
    with session_scope() as s:
        assert s.get(Subscriber, sub.id).status is SubscriberStatus.unsubscribed
    assert client.get(f"/preferences/{old_prefs}").status_code == 400  # the bumped version kills it


# ------------------------------------------------------------------ SMTP addresses


def test_quoteaddr_writes_what_smtplib_writes():
    cases = [
        "reader1@example.com", "newsletter+b.12345.abcdef0123@nashra.example", "o'brien@example.ie",
        "a..b@x.y", ".a@x.y", "a.@x.y", "Name <a@b.c>", "<a@b.c>", "a b@c.d", "a@[1.2.3.4]", '"q"@x.y',
        "a@b", "a@b.", "a@.b", " x@y.z", "x@y.z ", "<>", "", "a(comment)@b.c", "أ@x.y", "a@أ.y",
        "a@b\r\nRCPT TO:<x@y>", "a\n@b.c",
    ]
    rnd = random.Random(9)
    atext = "abcXYZ019!#$%&'*+/=?^_`{|}~-"
    for _ in range(3000):
        local = ".".join("".join(rnd.choice(atext) for _ in range(rnd.randint(1, 5))) for _ in range(rnd.randint(1, 3)))
        domain = ".".join("".join(rnd.choice("abz09-") for _ in range(rnd.randint(1, 5))) for _ in range(rnd.randint(1, 3)))
        cases.append(f"{local}@{domain}")
    for address in cases:
        assert quoteaddr(address) == smtplib.quoteaddr(address), address


# ------------------------------------------------------------------ sender threads


def test_senders_run_every_message_on_at_most_size_threads_and_survive_an_error():
    senders = Senders(3, "test-senders", run=lambda item: item[0](*item[1:]))
    done, names = [], set()
    lock = threading.Lock()
    gate = threading.Event()

    def work(i, sleep):
        gate.wait(10)
        with lock:
            done.append(i)
            names.add(threading.current_thread().name)
        if i == 5:
            raise RuntimeError("a bug in one message")

    with capture_logs() as logs:
        for i in range(20):
            senders.submit((work, i, 0))
        gate.set()
        senders.shutdown(wait=True)  # the queued work finishes first
    assert sorted(done) == list(range(20))
    assert 1 <= len(names) <= 3
    assert [e["event"] for e in logs if e.get("log_level") == "error"] == ["smtp.pool.sender_failed"]
    with pytest.raises(RuntimeError, match="after shutdown"):
        senders.submit((work, 99, 0))


def test_an_idle_sender_thread_is_reused_rather_than_a_new_one_started():
    senders = Senders(5, "test-senders-reuse", run=lambda fn: fn())
    seen = []
    for _ in range(10):
        finished = threading.Event()
        senders.submit(lambda e=finished: (seen.append(threading.current_thread().name), e.set()))
        assert finished.wait(10)
        time.sleep(0.01)  # the thread is back waiting for the next message
    senders.shutdown(wait=True)
    assert len(set(seen)) == 1


def test_a_running_sender_takes_the_queued_items_itself_and_a_shutdown_still_stops_every_thread():
    taken, gate = [], threading.Event()

    def run(item):
        gate.wait(10)
        taken.append((item, threading.current_thread().name))
        while (more := senders.take_ready()) is not None:  # what a session chaining messages does
            taken.append((more, threading.current_thread().name))

    senders = Senders(1, "test-senders-take", run=run)
    for i in range(5):
        senders.submit(i)
    gate.set()
    senders.shutdown(wait=True)  # the stop mark a take_ready() saw stays for the thread's own get()
    assert [i for i, _ in taken] == [0, 1, 2, 3, 4]
    assert len({name for _, name in taken}) == 1


# ------------------------------------------------------------------ metrics across a fork


_FORKED_WORKER = """
import os
from service.config import get_settings
from service.delivery import metrics

metrics.enable_multiprocess(get_settings())  # as a worker does at start, before its children fork
assert metrics._process_id() == os.getpid()
metrics.message("alert", "sent", 250, 1.0)
child = os.fork()
if child == 0:  # a prefork child: its own pid, so files of its own
    ok = metrics._process_id() == os.getpid()
    metrics.message("alert", "sent", 250, 1.0)
    os._exit(0 if ok else 3)
_, status = os.waitpid(child, 0)
assert os.waitstatus_to_exitcode(status) == 0, status
files = os.listdir(metrics.directory(get_settings()))
assert f"counter_{os.getpid()}.db" in files and f"counter_{child}.db" in files, files
sent = [s.value for f in metrics.collect_all(get_settings()) for s in f.samples
        if s.name == "nashra_delivery_messages_total" and s.labels.get("outcome") == "sent"]
assert sum(sent) == 2, sent
print("ok")
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_worker_counts_into_files_of_its_own(tmp_path):
    """The process id the metrics files are named by is cached (no getpid system call per
    increment), and still changes in a forked child."""
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    env["NASHRA_VAR_DIR"] = str(tmp_path / "var")
    done = subprocess.run([sys.executable, "-c", _FORKED_WORKER], env=env, capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr


# ------------------------------------------------------------------ MIME assembly


def test_the_date_header_is_the_current_second_as_formatdate_writes_it(monkeypatch):
    for now in (1_700_000_000.2, 1_700_000_000.9, 1_700_000_001.0, 1_800_000_123.5):
        monkeypatch.setattr(time, "time", lambda now=now: now)
        assert mime._date_header() == b"Date: " + email.utils.formatdate(now, usegmt=True).encode()


def test_links_in_the_html_are_escaped_as_markupsafe_escapes_them():
    for url in ("https://news.example/unsubscribe/WzEsMV0.aBc.d-e_f", "https://x.example/p?a=1&b='2'",
                "http://127.0.0.1:8000/preferences/x"):
        assert mime._html_attr(url) == str(escape(url)).encode()
