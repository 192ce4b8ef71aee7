"""Reports as receiving systems write them, about a message Nashra really sent.

`dsn()` is a Postfix-style delivery status notification (RFC 3464) quoting the original's
headers, `arf()` a mailbox provider's abuse report (RFC 5965) quoting the whole original,
`out_of_office()` an auto-reply.  `delivered_to()` puts the headers a mailbox's MTA adds
in front (Delivered-To, X-Original-To), as a message read from a bounce mailbox has them.
"""

from __future__ import annotations


def headers_of(raw: bytes) -> bytes:
    return raw.split(b"\r\n\r\n", 1)[0] + b"\r\n"


def dsn(verp: str, original: bytes, *, action: str = "failed", status: str = "5.1.1",
        diagnostic: str = "smtp; 550 5.1.1 <reader1@example.com>: Recipient address rejected: User unknown",
        block: bytes | None = None, final: str = "reader1@example.com") -> bytes:
    """A DSN as Postfix writes one: human text, delivery-status, the original's headers
    (`block`: the per-recipient fields as given, for a hostile or broken one)."""
    block = block or (
        f"Final-Recipient: rfc822; {final}\r\n"
        f"Original-Recipient: rfc822;{final}\r\n"
        f"Action: {action}\r\n"
        f"Status: {status}\r\n"
        f"Remote-MTA: dns; mx.example.com\r\n"
        f"Diagnostic-Code: {diagnostic}\r\n"
    ).encode()
    return (
        b"From: MAILER-DAEMON@mx.example.net (Mail Delivery System)\r\n"
        b"To: " + verp.encode() + b"\r\n"
        b"Subject: Undelivered Mail Returned to Sender\r\n"
        b"Auto-Submitted: auto-replied\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=delivery-status; boundary="dsn.BB"\r\n'
        b"\r\n"
        b"--dsn.BB\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"I'm sorry to have to inform you that your message could not be delivered.\r\n"
        b"\r\n--dsn.BB\r\n"
        b"Content-Type: message/delivery-status\r\n\r\n"
        b"Reporting-MTA: dns; mx.example.net\r\n"
        b"Arrival-Date: Mon,  1 Jan 2024 07:00:01 +0000 (UTC)\r\n\r\n"
        + block +
        b"\r\n--dsn.BB\r\n"
        b"Content-Type: text/rfc822-headers\r\n\r\n"
        + headers_of(original) +
        b"\r\n--dsn.BB--\r\n"
    )


def arf(to: str, original: bytes, return_path: str, feedback_type: str = "abuse") -> bytes:
    """An ARF abuse report as a mailbox provider's feedback loop sends one."""
    return (
        b"From: fbl@isp.example\r\n"
        b"To: " + to.encode() + b"\r\n"
        b"Subject: Abuse report\r\n"
        b"MIME-Version: 1.0\r\n"
        b'Content-Type: multipart/report; report-type=feedback-report;\r\n boundary="arf.1"\r\n'
        b"\r\n--arf.1\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        b"This is an email abuse report for a message received from you.\r\n"
        b"\r\n--arf.1\r\n"
        b"Content-Type: message/feedback-report\r\n\r\n"
        b"Feedback-Type: " + feedback_type.encode() + b"\r\n"
        b"User-Agent: ISP-FBL/2.1\r\n"
        b"Version: 1\r\n"
        b"Original-Mail-From: <" + return_path.encode() + b">\r\n"
        b"Original-Rcpt-To: <reader2@example.com>\r\n"
        b"\r\n--arf.1\r\n"
        b"Content-Type: message/rfc822\r\n"
        b"Content-Disposition: inline\r\n\r\n"
        b"Return-Path: <" + return_path.encode() + b">\r\n"
        + original +
        b"\r\n--arf.1--\r\n"
    )


def out_of_office(sender: str, verp: str) -> bytes:
    return (
        b"From: " + sender.encode() + b"\r\nTo: " + verp.encode() + b"\r\n"
        b"Subject: =?utf-8?b?2K7Yp9ix2Kwg2KfZhNmF2YPYqtio?=\r\n"
        b"Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n\r\n"
        + "أنا خارج المكتب حتى الأحد.".encode() + b"\r\n"
    )


def delivered_to(message: bytes, envelope_rcpt: str, mailbox: str = "bounces@mx.nashra.example") -> bytes:
    """As the bounce mailbox's MTA stores it: the mailbox it went to, and the address it was for."""
    return (b"Delivered-To: " + mailbox.encode() + b"\r\n"
            b"X-Original-To: " + envelope_rcpt.encode() + b"\r\n" + message)
