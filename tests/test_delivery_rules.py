"""The rules around sending: SMTP verdicts, message shape, DKIM, rate limits, sweeping, progress, logs."""

from __future__ import annotations

import datetime as dt
import email.policy
import json
import logging
import subprocess
from email import message_from_bytes

import pytest
import sqlalchemy as sa

from service.config import get_settings, load_settings, reset_settings
from service.db import session_scope
from service.delivery import throttle as ratelimit
from service.delivery.batch import REFUSAL_STREAK
from service.delivery.compose import compose, prepare
from service.delivery.progress import progress
from service.delivery.smtp import data_payload
from service.delivery.sweeper import sweep
from service.delivery.verdicts import Verdict, judge, scrub
from service.jobs import names
from service.models import Delivery, Edition, EditionStatus, utcnow
from tests.support.delivery import ledger, planned_edition, run_all_batches


@pytest.mark.parametrize(
    "stage,code,reply,verdict",
    [
        ("dot", 250, "2.0.0 queued as ABC", Verdict.sent),
        ("rcpt", 251, "user not local; will forward", Verdict.sent),
        ("rcpt", 421, "4.7.0 closing", Verdict.unavailable),  # the relay closes: another session takes it
        ("connect", 421, "4.3.2 too busy", Verdict.unavailable),
        ("mail", 451, "4.3.0 local error", Verdict.unavailable),
        ("rcpt", 451, "4.3.0 local error", Verdict.retry),
        ("rcpt", 452, "4.2.2 over quota", Verdict.retry),
        ("dot", 451, "4.7.1 greylisted", Verdict.retry),  # 4.7.x is still temporary
        ("rcpt", 550, "5.1.1 no such user", Verdict.bounced),
        ("rcpt", 550, "no such user here", Verdict.bounced),  # no enhanced code
        ("rcpt", 552, "5.2.2 mailbox full", Verdict.failed),
        ("rcpt", 550, "5.7.1 <a@b.example> blocked", Verdict.failed),  # one reader's policy answer
        ("dot", 554, "5.7.1 message rejected as spam", Verdict.failed),
        ("connect", 554, "5.7.1 no service for you", Verdict.sender_refused),
        ("rcpt", 535, "5.7.8 authentication failed", Verdict.sender_refused),
        ("data", 250, "what?", Verdict.unavailable),
        ("mail", 550, "5.1.8 bad sender domain", Verdict.sender_refused),
        ("mail", 530, "authentication required", Verdict.sender_refused),
        ("data", 554, "no valid recipients", Verdict.failed),
        ("data", 354, "go ahead", Verdict.sent),
    ],
)
def test_smtp_replies_mean_what_the_issue_says(stage, code, reply, verdict):
    assert judge(stage, code, reply).verdict == verdict


def test_scrub_hashes_addresses_in_server_replies():
    text = scrub("550 5.1.1 <reader2@example.com>: Recipient address rejected")
    assert "reader2@example.com" not in text and "h:" in text and "Recipient address rejected" in text


def test_dot_stuffing_and_line_endings():
    assert data_payload(b"a\n.b\r\n..c") == b"a\r\n..b\r\n...c\r\n.\r\n"


def _composed(settings=None, html="<p dir=\"rtl\">مرحبا __NASHRA_UNSUBSCRIBE_URL__</p>"):
    tpl = prepare(7, "alert", "all", "عاجل: " + "خبر " * 40 + "\r\nBcc: x@y", html, "نص")
    return compose(tpl, delivery_id=11, subscriber_id=5, token_version=2, to_addr="r@example.com",
                   settings=settings or get_settings())


def test_composed_message_is_clean_mime():
    data = _composed().data
    assert b"\n" not in data.replace(b"\r\n", b"")  # CRLF only
    assert max(len(line) for line in data.split(b"\r\n")) <= 998
    msg = message_from_bytes(data, policy=email.policy.default)
    assert "Bcc" not in msg  # a subject cannot smuggle a header in
    assert msg["Subject"].startswith("عاجل: خبر")
    assert msg["List-Id"].endswith("<alerts.nashra.example>")
    assert "/unsubscribe/" in msg.get_body(("html",)).get_content()


def test_dkim_signature_covers_the_list_unsubscribe_headers(tmp_path, monkeypatch):
    import dkim

    key = tmp_path / "dkim.pem"
    subprocess.run(["openssl", "genrsa", "-out", str(key), "2048"], check=True, capture_output=True)
    pub = subprocess.run(["openssl", "rsa", "-in", str(key), "-pubout", "-outform", "DER"], check=True,
                         capture_output=True).stdout
    import base64

    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(pub)
    monkeypatch.setenv("DKIM_SELECTOR", "nashra")
    monkeypatch.setenv("DKIM_PRIVATE_KEY_PATH", str(key))
    reset_settings()
    data = _composed().data
    assert data.startswith(b"DKIM-Signature:")
    sig = message_from_bytes(data, policy=email.policy.compat32)["DKIM-Signature"]
    signed = [h.strip().lower() for h in sig.split("h=")[1].split(";")[0].replace("\r\n", "").split(":")]
    assert {"list-unsubscribe", "list-unsubscribe-post", "from", "subject"} <= set(signed)

    def dns(name, timeout=5):
        assert name == b"nashra._domainkey.nashra.example."
        return record

    assert dkim.verify(data, dnsfunc=dns)
    # and it is a real signature: one changed byte of the body breaks it
    assert not dkim.verify(data.replace(b"Content-Transfer-Encoding: base64\r\n\r\n", b"Content-Transfer-Encoding: base64\r\n\r\nA", 1), dnsfunc=dns)


# ---------------------------------------------------------------- rate limits


def _settings(**kw):
    return load_settings(**kw)


def test_global_rate_is_shared_by_workers_through_redis(redis_url):
    a = ratelimit.Limiter(_settings(rate_per_second=10))
    b = ratelimit.Limiter(_settings(rate_per_second=10))  # another worker process
    assert a._try(ratelimit.buckets_for(a.settings, "digest", "example.com")) == 0
    wait = b._try(ratelimit.buckets_for(b.settings, "digest", "example.com"))
    assert 0 < wait <= 0.1  # one message per 100 ms across both


def test_alerts_go_ahead_of_digests_and_push_them_back(redis_url):
    s = _settings(rate_per_second=10, alert_rate_per_second=100)
    digests, alerts = ratelimit.Limiter(s), ratelimit.Limiter(s)
    assert digests._try(ratelimit.buckets_for(s, "digest", "x.com")) == 0
    # the global budget is used up for this instant: a digest waits, an alert does not
    assert digests._try(ratelimit.buckets_for(s, "digest", "x.com")) > 0
    for _ in range(5):
        assert alerts._try(ratelimit.buckets_for(s, "alert", "x.com")) == 0
    # the alerts were charged to the global budget: digests now wait about 6 slots
    assert digests._try(ratelimit.buckets_for(s, "digest", "x.com")) > 0.3
    # and alerts have their own ceiling
    waits = [alerts._try(ratelimit.buckets_for(s, "alert", "x.com")) for _ in range(30)]
    assert any(w > 0 for w in waits)


def test_alerts_without_their_own_rate_never_exceed_the_providers(redis_url):
    s = _settings(rate_per_second=10)  # ALERT_RATE_PER_SECOND unset
    alerts = ratelimit.Limiter(s)
    waits = [alerts._try(ratelimit.buckets_for(s, "alert", "x.com")) for _ in range(5)]
    assert waits[0] == 0 and all(w > 0 for w in waits[2:])  # 10/s, not unlimited


def test_per_domain_and_per_hour_limits(redis_url):
    s = _settings(domain_rates="gmail.com=1", rate_per_hour=3)
    lim = ratelimit.Limiter(s)
    assert lim._try(ratelimit.buckets_for(s, "digest", "gmail.com")) == 0
    assert lim._try(ratelimit.buckets_for(s, "digest", "gmail.com")) > 0.5  # gmail: 1/s
    assert lim._try(ratelimit.buckets_for(s, "digest", "yahoo.com")) == 0  # others are not held back
    assert lim._try(ratelimit.buckets_for(s, "digest", "yahoo.com")) == 0
    assert lim._try(ratelimit.buckets_for(s, "digest", "yahoo.com")) > 600  # 3 an hour, used up


def test_limiter_without_redis_or_with_redis_down_still_limits():
    from tests.support.net import free_port

    for s in (_settings(rate_per_second=5), _settings(rate_per_second=5, redis_url=f"redis://127.0.0.1:{free_port()}/0")):
        lim = ratelimit.Limiter(s)
        b = ratelimit.buckets_for(s, "digest", "x.com")
        assert lim._try(b) == 0
        assert lim._try(b) > 0.1


def test_bad_rate_settings_are_refused():
    from service.config import ConfigError

    with pytest.raises(ConfigError, match="DOMAIN_RATES"):
        load_settings(domain_rates="gmail.com")


# ---------------------------------------------------------------- sweeper and progress


def test_sweeper_returns_expired_leases_and_finishes_editions(pg_env, redis_url, smtp_sink):
    from service.jobs.app import configure

    configure()
    eid = planned_edition(3)
    with session_scope() as s:  # a worker claimed all three rows and died
        s.execute(sa.update(Delivery).values(status="claimed", claimed_by="dead:1:1",
                                             lease_until=utcnow() - dt.timedelta(seconds=1)))
        s.execute(sa.update(Edition).values(status="sending", started_at=utcnow()))
    with session_scope() as s:
        report = sweep(s)
    assert report.expired == 3 and report.redispatched == {eid: 1}
    assert set(ledger(eid).values()) == {"queued"}
    # a live lease is left alone
    with session_scope() as s:
        s.execute(sa.update(Delivery).values(status="claimed", claimed_by="alive:1:1",
                                             lease_until=utcnow() + dt.timedelta(minutes=5)))
    with session_scope() as s:
        assert sweep(s).expired == 0
    with session_scope() as s:
        s.execute(sa.update(Delivery).values(status="sent", claimed_by=None, lease_until=None))
    with session_scope() as s:
        assert sweep(s).finished == [eid]
    configure()


def test_sweeper_redispatches_a_stalled_edition_only_when_its_queue_is_empty(pg_env, redis_url):
    from service.jobs.app import configure

    configure()
    eid = planned_edition(5)
    with session_scope() as s:
        s.execute(sa.update(Edition).values(status="sending", started_at=utcnow()))
        s.execute(sa.update(Delivery).values(updated_at=utcnow() - dt.timedelta(minutes=10)))
    with session_scope() as s:
        assert sweep(s).redispatched == {eid: 1}  # lost messages: the queue is empty
    with session_scope() as s:
        assert sweep(s).redispatched == {}  # now one waits in the queue: nothing more
    configure()


def test_sweep_task_replans_drafts_whose_planning_message_was_lost(pg_env, redis_url):
    """Committed, then the process died (or the broker was down) before the plan message
    went out: the next sweep hands the draft to the planner on its own queue.  A draft
    made a moment ago is left to its own message; a planned edition is not a draft."""
    import redis

    from service.jobs.app import configure
    from service.jobs.tasks import sweep as sweep_task
    from service.models import EditionKind

    configure()
    now = utcnow()
    with session_scope() as s:
        lost_alert = Edition(kind=EditionKind.alert, status=EditionStatus.draft, params={},
                             created_at=now - dt.timedelta(minutes=3))
        lost_correction = Edition(kind=EditionKind.correction, status=EditionStatus.draft, params={},
                                  created_at=now - dt.timedelta(minutes=10))
        fresh = Edition(kind=EditionKind.alert, status=EditionStatus.draft, params={}, created_at=now)
        planned = Edition(kind=EditionKind.alert, status=EditionStatus.planned, params={},
                          created_at=now - dt.timedelta(minutes=10))
        s.add_all([lost_alert, lost_correction, fresh, planned])
    assert sweep_task()["replanned"] == [lost_alert.id, lost_correction.id]
    client = redis.Redis.from_url(redis_url)
    prefix = get_settings().redis_key_prefix

    def queued(queue):
        return [(json.loads(m)["headers"]["task"], json.loads(m)["headers"]["argsrepr"])
                for m in client.lrange(prefix + queue, 0, -1)]

    try:
        assert queued("alerts") == [(names.PLAN_EDITION, f"({lost_alert.id},)")]
        assert queued("digests") == [(names.PLAN_EDITION, f"({lost_correction.id},)")]
    finally:
        client.close()
        configure()


def test_progress_reads_the_ledger(pg_env, smtp_sink):
    smtp_sink.rcpt_replies["reader3@example.com"] = "550 5.1.1 unknown"
    smtp_sink.rcpt_replies["reader4@example.com"] = "451 4.3.0 later"
    eid = planned_edition(10)
    with session_scope() as s:
        p = progress(s, eid)
    assert (p["total"], p["sent"], p["remaining"], p["rate"], p["status"]) == (10, 0, 10, 0.0, "planned")
    run_all_batches(eid)
    with session_scope() as s:
        p = progress(s, eid)
    assert (p["sent"], p["failed"], p["remaining"]) == (8, 1, 1)
    assert p["by_status"]["retry"] == 1 and p["status"] == "sending"
    assert p["rate"] > 0 and p["eta_seconds"] is not None
    json.dumps(p)  # the API returns it as is
    with pytest.raises(LookupError):
        with session_scope() as s:
            progress(s, 424242)


def test_no_address_or_token_in_the_logs(pg_env, smtp_sink, caplog, capsys):
    smtp_sink.rcpt_replies["reader1@example.com"] = "550 5.1.1 <reader1@example.com>: no such user"
    refused = REFUSAL_STREAK + 5  # answers come back in any order: reader0's 250 may land among them
    for i in range(2, 2 + refused):  # the same 5.7.1 for many readers in a row: it refuses *us*
        smtp_sink.rcpt_replies[f"reader{i}@example.com"] = f"554 5.7.1 <reader{i}@example.com> blocked"
    caplog.set_level(logging.DEBUG)
    eid = planned_edition(2 + refused)
    with pytest.raises(Exception, match="paused"):
        run_all_batches(eid)
    with session_scope() as s:
        assert s.get(Edition, eid).status == EditionStatus.paused
        assert "reader2@example.com" not in s.get(Edition, eid).pause_reason
    out = capsys.readouterr()
    ours = [r for r in caplog.records if not r.name.startswith("mail.log")]  # not the test server's own
    logged = "\n".join(r.getMessage() for r in ours) + out.out + out.err
    assert "delivery.sender_refused" in logged
    assert "@example.com" not in logged
    assert "/unsubscribe/" not in logged


def test_composed_messages_are_wire_ready():
    """compose() promises what data_payload(wire_ready=True) skips checking."""
    data = _composed().data
    assert data_payload(data, wire_ready=True) == data_payload(data)
