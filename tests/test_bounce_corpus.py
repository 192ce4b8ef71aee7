"""289 real bounces from some seventy mail systems, through the real bounce server.

tests/data/bounces/ holds the messages and their labels (manifest.csv; README.md there
says where each came from and how it was labelled).  Their envelopes name foreign
addresses, so each message is delivered over SMTP from the null sender to the signed
VERP address of a fresh ledger row of a real edition — as a receiving MTA would send it
back — and the row, the suppression list and the reader are checked against the label.

Printed: the detection rate per kind and overall.  Asserted: a floor under what was
measured; that nothing labelled soft, failed, refusal or none ever suppresses a reader;
that no real bounce is refused with 554.  Then Hypothesis throws random and hostile
text at the classifier and the plain-bounce reader.
"""

from __future__ import annotations

import csv
import email
import email.policy
import time
from collections import Counter
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.db import session_scope
from service.inbound import classify, plain_bounces
from service.models import Delivery, Subscriber, SubscriberStatus, Suppression
from tests.support.delivery import planned_edition, run_all_batches
from tests.test_bounces import deliver

CORPUS = Path(__file__).parent / "data" / "bounces"
MANIFEST = list(csv.DictReader((CORPUS / "manifest.csv").open(encoding="utf-8")))
KINDS = ("hard", "soft", "refusal", "failed", "complaint", "none")
# What the bounce server answers ("250 2.0.0 <outcome>") for each label.
OUTCOME = {"hard": "hard_bounce", "soft": "soft_bounce", "refusal": "refused_us", "failed": "failed",
           "complaint": "complaint", "none": "ignored"}
# Floors under the rates measured when the corpus was built (hard 115/116, soft 63/63,
# refusal 8/8, failed 86/87, complaint 1/1, none 14/14; 287/289 overall).  Before plain
# bounces were read: hard 32/116, soft 12/63, refusal 1/8, failed 57/87, 114/289.
FLOOR = {"hard": 0.95, "soft": 0.95, "refusal": 0.85, "failed": 0.93, "complaint": 1.0, "none": 1.0}
FLOOR_OVERALL = 0.97


@pytest.fixture
def rows(pg_env, smtp_sink):
    """One reader and one sent ledger row per corpus message: [(address, VERP)]."""
    eid = planned_edition(len(MANIFEST))
    run_all_batches(eid)
    got = smtp_sink.wait_for(len(MANIFEST), timeout=120)
    assert len(got) == len(MANIFEST)
    return sorted(((m.rcpt_tos[0], m.mail_from) for m in got), key=lambda pair: pair[1])


def _state() -> dict[str, tuple[str, str | None, str]]:
    """address → (row status, suppression reason, reader status)."""
    with session_scope() as s:
        supp = dict(s.execute(sa.select(Suppression.email, Suppression.reason)).all())
        return {email_: (status.value, supp.get(email_), sub_status.value)
                for email_, status, sub_status in s.execute(
                    sa.select(Subscriber.email, Delivery.status, Subscriber.status)
                    .join(Delivery, Delivery.subscriber_id == Subscriber.id))}


def _as_expected(kind: str, state: tuple[str, str | None, str]) -> bool:
    row, suppressed, reader = state
    return {
        "hard": row == "failed" and suppressed == "hard_bounce",
        "soft": row == "sent" and suppressed is None,
        "refusal": row == "failed" and suppressed is None,
        "failed": row == "failed" and suppressed is None,
        "complaint": suppressed == "complaint" and reader == SubscriberStatus.unsubscribed.value,
        "none": row == "sent" and suppressed is None,
    }[kind]


def test_real_bounces_through_the_bounce_server(rows, bounce_server):
    assert len(rows) == len(MANIFEST) == 289
    replies: dict[str, tuple[int, str]] = {}
    started = time.monotonic()
    for entry, (_, verp) in zip(MANIFEST, rows, strict=True):
        replies[entry["file"]] = deliver(bounce_server.port, verp, (CORPUS / entry["file"]).read_bytes())
    elapsed = time.monotonic() - started
    state = _state()
    by_file = {entry["file"]: state[address] for entry, (address, _) in zip(MANIFEST, rows, strict=True)}

    total, right = Counter(), Counter()
    misses = []
    for entry in MANIFEST:
        name, kind = entry["file"], entry["kind"]
        code, reply = replies[name]
        total[kind] += 1
        if code == 250 and reply == f"2.0.0 {OUTCOME[kind]}" and _as_expected(kind, by_file[name]):
            right[kind] += 1
        else:
            misses.append(f"{name}: labelled {kind}, got {code} {reply!r} {by_file[name]}")
    for kind in KINDS:
        print(f"[measured] {kind} recognised {right[kind]}/{total[kind]} "
              f"({100 * right[kind] / total[kind]:.1f} %)")
    overall = sum(right.values()) / len(MANIFEST)
    print(f"[measured] all kinds {sum(right.values())}/{len(MANIFEST)} ({100 * overall:.1f} %), "
          f"{1000 * elapsed / len(MANIFEST):.1f} ms a message over SMTP")
    for miss in misses:
        print(f"[missed] {miss}")

    refused = [name for name, (code, _) in replies.items() if code != 250]
    assert refused == [], "real bounces refused"
    wrongly_suppressed = [e["file"] for e in MANIFEST if e["kind"] in ("soft", "failed", "refusal", "none")
                          and by_file[e["file"]][1] is not None]
    assert wrongly_suppressed == [], "readers suppressed for a failure that was not theirs"
    for kind in KINDS:
        assert right[kind] / total[kind] >= FLOOR[kind], (kind, misses)
    assert overall >= FLOOR_OVERALL, misses


# ---------------------------------------------------------------- fuzz

_FAILURE_WORDS = ("unknown", "exist", "invalid", "no such", "not found", "disabled", "inactive", "suspended",
                  "deactivated", "discontinued", "not valid", "not known", "not recogni", "not listed",
                  "no longer", "not an active", "not a known", "no mail", "mailbox", "badrcptto", "bad_recipient",
                  "recipnotfound", "userid", "customer", "have a", "delivery point", "nameserver", "recipient",
                  "doesn", "nie istnieje", "recens", "existe", "existiert", "esiste", "domain", "host",
                  "name service", "unrouteable", "name or service", "match", "no user", "unavailable")
_hostile = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=400)
_bouncy = st.lists(st.sampled_from([
    "550", "5.1.1", "4.2.2", "5.7.1", "Action: failed", "Status: 5.0.0", "Mail Delivery Subsystem",
    "could not be delivered", "permanent error", "\r\n", "\n ", "(", ")", "<", ">", "@", "#", ":", ";",
    "quota", "spam", "delayed", "sender", "SPF", "mailbox full", "user unknown", "Received: x", "--",
    "نشرة", "\x00", "\r", "=?utf-8?b?2YY=?=",
]), max_size=60).map(" ".join)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(action=st.sampled_from(["failed", "delayed", "delivered", "relayed", "expanded", "", "x"]),
       status=st.one_of(st.from_regex(r"[245]\.\d{1,3}\.\d{1,3}", fullmatch=True), _hostile),
       words=st.one_of(_hostile, _bouncy))
def test_classify_never_raises_and_says_hard_only_on_words_or_codes_about_the_address(action, status, words):
    kind = classify.kind_of(action, status, words)
    assert kind in (None, "hard", "soft", "refusal", "failed", "delivered")
    if kind == "hard":
        lowered = words.lower()
        code_says = status.startswith(("5.1.", "5.2.1", "5.4.4"))
        assert code_says or any(w in lowered for w in _FAILURE_WORDS), (status, words)


_NO_FAILURE = st.text(alphabet="abcdefghijklmopqrtvwyz .,\n", max_size=300).filter(
    lambda t: not any(w in t.lower() for w in _FAILURE_WORDS))


@settings(max_examples=300, deadline=None)
@given(action=st.sampled_from(["failed", "delayed"]), code=st.sampled_from(["5.0.0", "5.7.1", "5.3.0", "5.5.0"]),
       words=_NO_FAILURE)
def test_classify_never_says_hard_without_failure_words(action, code, words):
    assert classify.kind_of(action, code, words) != "hard"


def _message(subject: str, sender: str, body: str, ctype: str = "text/plain") -> bytes:
    head = f"From: {sender}\r\nTo: newsletter+b.1.x@nashra.example\r\nSubject: {subject}\r\n" \
           f"MIME-Version: 1.0\r\nContent-Type: {ctype}; charset=utf-8\r\n\r\n"
    return head.encode("utf-8", "surrogatepass") + body.encode("utf-8", "surrogatepass")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subject=st.one_of(_hostile, _bouncy), sender=st.one_of(_hostile, st.just("MAILER-DAEMON@mx.example")),
       body=st.one_of(_hostile, _bouncy),
       ctype=st.sampled_from(["text/plain", "text/html", "multipart/report", "multipart/mixed; boundary=Q"]))
def test_plain_reader_never_raises_on_hostile_text(subject, sender, body, ctype):
    msg = email.message_from_bytes(_message(subject.replace("\n", " "), sender.replace("\n", " "), body, ctype),
                                   policy=email.policy.compat32)
    found = plain_bounces.read(msg)
    if found is not None:
        assert found.action in ("failed", "delayed")
        assert classify.kind_of(found.action, found.status, found.diagnostic) in ("hard", "soft", "refusal", "failed")


@settings(max_examples=200, deadline=None)
@given(body=_NO_FAILURE)
def test_a_bounce_with_no_failure_words_is_never_hard(body):
    raw = _message("Undelivered Mail Returned to Sender", "MAILER-DAEMON@mx.example",
                   "This message could not be delivered.\n" + body)
    found = plain_bounces.read(email.message_from_bytes(raw, policy=email.policy.compat32))
    assert found is not None
    assert classify.kind_of(found.action, found.status, found.diagnostic) != "hard"


def test_an_out_of_office_reply_is_no_bounce():
    raw = _message("Out of Office: the weekly digest", "reader@example.com",
                   "I am out of the office until Sunday and will reply when I am back.")
    assert plain_bounces.read(email.message_from_bytes(raw, policy=email.policy.compat32)) is None


def test_the_returned_message_never_judges_the_reader():
    # A qmail notice with no reason of its own, then our newsletter quoted inline, whose
    # words (here, deliberately, "user unknown" and "mailbox full") must not count.
    raw = _message("failure notice", "MAILER-DAEMON@mx.example",
                   "Hi. This is the qmail-send program at mx.example.\n"
                   "I'm afraid I wasn't able to deliver your message to the following addresses.\n"
                   "This is a permanent error; I've given up. Sorry it didn't work out.\n\n"
                   "<reader@example.com>:\n\n"
                   "--- Below this line is a copy of the message.\n\n"
                   "Return-Path: <newsletter+b.1.x@nashra.example>\nSubject: news\n\n"
                   "User unknown? Mailbox full? Read our explainer.\n")
    found = plain_bounces.read(email.message_from_bytes(raw, policy=email.policy.compat32))
    assert found is not None and found.status == "5.0.0"
    assert classify.kind_of(found.action, found.status, found.diagnostic) == "failed"


def test_sender_rejected_is_a_refusal_of_us_whatever_the_code():
    for status in ("5.1.8", "5.1.1", "5.0.0", "5.7.1"):
        assert classify.kind_of("failed", status, "550 5.1.8 <newsletter@nashra.example>: Sender address "
                                                  "rejected: Domain not found") == "refusal"
    assert classify.kind_of("failed", "5.0.0", "553 Sender Policy Framework (SPF) fail; User unknown") == "refusal"
