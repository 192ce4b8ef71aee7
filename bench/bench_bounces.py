"""Bounce handling: how many inbound reports a second, against references in the same run.

    .venv/bin/python bench/bench_bounces.py [--reports 2000]

A scratch PostgreSQL database (created and dropped here) holds N readers, each with a
`sent` ledger row.  N reports are built for those rows, as receiving systems write
them: 70 % hard-bounce DSNs (5.1.1, the original's headers quoted), 20 % delayed DSNs,
10 % ARF abuse complaints (the original message quoted).

It prints:
  1. parsing: `parse_report()` (the strict DSN/ARF reader) against the stdlib's
     `email.message_from_bytes` alone on the same bytes — the cost of the checks;
  2. `handle_inbound()` in this process, one `session_scope()` per report, as the
     server runs it — first pass (every report changes the ledger), then the same
     reports again (idempotent: nothing changes; the count of changes is printed);
  3. over SMTP: the same reports through `BounceServer` (aiosmtpd, database work in a
     thread) on one persistent smtplib connection, against a plain aiosmtpd server that
     only accepts (no parsing, no database) — the SMTP ceiling on this machine.

Needs PostgreSQL (BENCH_PG_ADMIN_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import argparse
import email
import email.policy
import os
import smtplib
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from bench.support import free_port, insert_readers, scratch_database  # noqa: E402

ORIGINAL_BODY = (
    "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    + "2YbYtNix2Kkg2KfZhNi12KjYp9itOiDYp9mE2YXYutix2Kgg2YrYudiy2ZHYsiDYp9mE2KPZhdmG\r\n" * 200
)


def original_headers(settings, delivery_id: int, edition_id: int, subscriber_id: int) -> str:
    from service.delivery.compose import message_id

    return (
        f"From: نشرة <newsletter@nashra.example>\r\nTo: reader{subscriber_id}@example.com\r\n"
        f"Subject: =?utf-8?b?2YbYtNix2Kkg2KfZhNi12KjYp9it?=\r\nDate: Mon, 1 Jan 2024 07:00:00 +0000\r\n"
        f"Message-ID: {message_id(settings, edition_id, subscriber_id)}\r\n"
        f"List-Id: <digest.nashra.example>\r\n"
    )


def dsn(verp: str, headers: str, i: int, action: str, status: str) -> bytes:
    return (
        f"From: MAILER-DAEMON@mx.example.net\r\nTo: {verp}\r\nSubject: Undelivered Mail\r\n"
        f"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="B{i}"\r\n\r\n'
        f"--B{i}\r\nContent-Type: text/plain\r\n\r\nThe message could not be delivered.\r\n"
        f"--B{i}\r\nContent-Type: message/delivery-status\r\n\r\n"
        f"Reporting-MTA: dns; mx.example.net\r\n\r\n"
        f"Final-Recipient: rfc822; reader{i}@example.com\r\nAction: {action}\r\nStatus: {status}\r\n"
        f"Diagnostic-Code: smtp; 550 {status} <reader{i}@example.com>: Recipient address rejected\r\n\r\n"
        f"--B{i}\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers}\r\n--B{i}--\r\n"
    ).encode()


def arf(verp: str, headers: str, i: int) -> bytes:
    return (
        f"From: fbl@isp.example\r\nTo: {verp}\r\nSubject: Abuse report\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=feedback-report; boundary="A{i}"\r\n\r\n'
        f"--A{i}\r\nContent-Type: text/plain\r\n\r\nAn abuse report.\r\n"
        f"--A{i}\r\nContent-Type: message/feedback-report\r\n\r\n"
        f"Feedback-Type: abuse\r\nUser-Agent: FBL/1\r\nVersion: 1\r\n\r\n"
        f"--A{i}\r\nContent-Type: message/rfc822\r\n\r\nReturn-Path: <{verp}>\r\n{headers}{ORIGINAL_BODY}"
        f"\r\n--A{i}--\r\n"
    ).encode()


def build(n: int):
    from service.config import get_settings
    from service.db import session_scope
    from service.delivery.compose import bounce_address
    from service.models import Delivery, Edition, EditionKind, EditionStatus, Subscriber, utcnow

    settings = get_settings()
    now = utcnow()
    with session_scope() as s:
        insert_readers(s, n, email="'reader' || (i - 1) || '@example.com'")  # reader0 … reader{n-1}
        edition = Edition(kind=EditionKind.digest, status=EditionStatus.done, title="bench", params={})
        s.add(edition)
        s.flush()
        ids = s.scalars(sa.select(Subscriber.id).order_by(Subscriber.id)).all()
        s.execute(sa.insert(Delivery.__table__), [
            {"edition_id": edition.id, "subscriber_id": sid, "variant": "all", "status": "sent", "attempts": 1,
             "smtp_code": 250, "smtp_reply": "250 2.0.0 OK", "updated_at": now} for sid in ids])
        rows = s.execute(sa.select(Delivery.id, Delivery.subscriber_id).order_by(Delivery.id)).all()
        edition_id = edition.id
    reports = []
    for i, (did, sid) in enumerate(rows):
        verp = bounce_address(settings, did)
        headers = original_headers(settings, did, edition_id, sid)
        kind = i % 10
        if kind < 7:
            reports.append((verp, dsn(verp, headers, i, "failed", "5.1.1")))
        elif kind < 9:
            reports.append((verp, dsn(verp, headers, i, "delayed", "4.4.7")))
        else:
            reports.append((verp, arf(verp, headers, i)))
    return reports


def timed(fn, items) -> float:
    t0 = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - t0


def over_smtp(port: int, reports) -> float:
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as smtp:
        smtp.ehlo("mx.example.net")
        t0 = time.perf_counter()
        for rcpt, data in reports:
            smtp.mail("")
            code, _ = smtp.rcpt(rcpt)
            assert code == 250, code
            code, reply = smtp.data(data)
            assert code == 250, (code, reply)
        return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reports", type=int, default=2000)
    n = parser.parse_args().reports

    with scratch_database("bounces") as url:
        os.environ.update(DATABASE_URL=url, SECRET_KEY="bench-secret-key-0123456789abcdef",
                          NASHRA_VAR_DIR=tempfile.mkdtemp(prefix="nashra-bench-"), LOG_LEVEL="WARNING")
        from aiosmtpd.controller import Controller

        from service.db import session_scope
        from service.inbound.reports import handle_inbound, parse_report
        from service.inbound.smtp_server import BounceServer
        from service.logs import setup_logging
        from service.models import (
            Delivery,
            DeliveryStatus,
            Subscriber,
            SubscriberStatus,
            Suppression,
        )

        setup_logging(fmt="json", level="WARNING")
        reports = build(n)
        sizes = sorted(len(d) for _, d in reports)
        print(f"bench_bounces: {n} reports (70% hard DSN, 20% delayed DSN, 10% ARF), "
              f"{sizes[0] / 1000:.1f}-{sizes[-1] / 1000:.1f} KB, PostgreSQL, loopback SMTP")

        # 1. parsing
        datas = [d for _, d in reports]
        ref = min(timed(lambda d: email.message_from_bytes(d, policy=email.policy.compat32), datas) for _ in range(3))
        ours = min(timed(parse_report, datas) for _ in range(3))
        print(f"parse, stdlib message_from_bytes alone (reference): {ref / n * 1e6:8.1f} µs/report")
        print(f"parse, parse_report (strict DSN/ARF reader)       : {ours / n * 1e6:8.1f} µs/report"
              f"   ratio {ours / ref:.2f}x")

        # 2. handle_inbound in process
        def one(item):
            with session_scope() as s:
                return handle_inbound(s, *item)

        first_half, second_half = reports[: n // 2], reports[n // 2:]
        changed = []
        t0 = time.perf_counter()
        for item in first_half:
            changed.append(one(item).changed)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        repeat = [one(item).changed for item in first_half]
        again = time.perf_counter() - t0
        print(f"handle_inbound, new reports     : {len(first_half) / first:8.0f} reports/s "
              f"({first / len(first_half) * 1e3:.2f} ms each, {sum(changed)} changed the ledger)")
        print(f"handle_inbound, same again      : {len(first_half) / again:8.0f} reports/s "
              f"({sum(repeat)} changed the ledger — must be 0)")

        # 3. over SMTP, against an accept-only aiosmtpd server
        class Accept:
            async def handle_DATA(self, server, session, envelope):
                return "250 2.0.0 OK"

        port = free_port()
        ctl = Controller(Accept(), hostname="127.0.0.1", port=port, data_size_limit=2_000_000)
        ctl.start()
        ceiling = over_smtp(port, second_half)
        ctl.stop()
        port = free_port()
        server = BounceServer("127.0.0.1", port)
        server.start()
        served = over_smtp(port, second_half)
        server.stop()
        m = len(second_half)
        print(f"SMTP, accept-only aiosmtpd (reference): {m / ceiling:8.0f} reports/s")
        print(f"SMTP, BounceServer → PostgreSQL      : {m / served:8.0f} reports/s   "
              f"ratio {ceiling / served:.2f} of the ceiling ({served / ceiling:.1f}x slower)")

        with session_scope() as s:
            failed = s.scalar(sa.select(sa.func.count()).select_from(Delivery)
                              .where(Delivery.status == DeliveryStatus.failed))
            supp = s.execute(sa.select(Suppression.reason, sa.func.count()).group_by(Suppression.reason)).all()
            gone = s.scalar(sa.select(sa.func.count()).select_from(Subscriber)
                            .where(Subscriber.status == SubscriberStatus.unsubscribed))
        print(f"ledger afterwards: {failed} failed, suppressions {dict(supp)}, {gone} unsubscribed")


if __name__ == "__main__":
    main()
