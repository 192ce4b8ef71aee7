"""The PIPELINING test server (tests/support/pipelining_smtp.py) does what later tests trust.

A raw socket client that writes MAIL, RCPT and DATA together is recorded as pipelined;
smtplib, which waits for every reply, is not.  Scripted replies, the per-connection
message limit, slow replies, arrival counts and the connection high-water mark are each
checked against a real client.
"""

from __future__ import annotations

import smtplib
import socket
import threading

import pytest

from tests.support.pipelining_smtp import PipeliningSmtpServer

ARABIC = "عاجل: انتخابات"


class RawClient:
    """A socket client that writes commands as the test says, pipelined or not."""

    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> list[str]:
        """One (possibly multi-line) reply."""
        lines = []
        while True:
            line = self.file.readline()
            if not line:
                raise ConnectionError("server closed the connection")
            lines.append(line.decode().rstrip("\r\n"))
            if line[3:4] != b"-":
                return lines

    def code(self) -> int:
        return int(self.reply()[-1][:3])

    def send(self, *lines: str | bytes) -> None:
        self.sock.sendall(b"".join(x if isinstance(x, bytes) else x.encode() + b"\r\n" for x in lines))

    def ehlo(self) -> list[str]:
        self.send("EHLO client.test")
        return self.reply()

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture
def server():
    with PipeliningSmtpServer() as srv:
        yield srv


def _body(text: str = "hello") -> bytes:
    return f"Subject: test\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n".encode()


def test_advertises_pipelining_and_records_a_pipelined_turn(server):
    c = RawClient(server.port)
    assert c.greeting[0].startswith("220")
    assert "250-PIPELINING" in c.ehlo()
    # One write: MAIL, two RCPTs and DATA before any reply.
    c.send("MAIL FROM:<news@nashra.test>", "RCPT TO:<a@example.test>", "RCPT TO:<b@example.test>", "DATA")
    assert [c.code() for _ in range(4)] == [250, 250, 250, 354]
    c.send(_body(ARABIC) + b".\r\n")
    assert c.code() == 250
    c.send("QUIT")
    assert c.code() == 221
    c.close()

    (msg,) = server.wait_for(1)
    assert msg.pipelined is True
    assert msg.mail_from == "news@nashra.test"
    assert msg.rcpt_tos == ["a@example.test", "b@example.test"]
    assert msg.data == _body(ARABIC)
    assert msg.message["Subject"] == "test"


def test_smtplib_waits_for_each_reply_so_its_turns_are_not_pipelined(server):
    raw = _body(".a line that starts with a dot\r\n" + ARABIC)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("pipelining")
        refused = client.sendmail("news@nashra.test", ["a@example.test"], raw)
        assert refused == {}
    (msg,) = server.wait_for(1)
    assert msg.pipelined is False
    assert msg.data == raw  # dot-unstuffed back to what the client meant, bytes unchanged
    assert msg.rcpt_tos == ["a@example.test"]


def test_a_turn_sent_one_command_at_a_time_is_not_pipelined(server):
    c = RawClient(server.port)
    c.ehlo()
    c.send("MAIL FROM:<news@nashra.test>")
    assert c.code() == 250
    c.send("RCPT TO:<a@example.test>")
    assert c.code() == 250
    c.send("DATA")
    assert c.code() == 354
    c.send(_body() + b".\r\n")
    assert c.code() == 250
    # …and the next transaction on the same connection, pipelined this time.
    c.send("MAIL FROM:<news@nashra.test>", "RCPT TO:<b@example.test>", "DATA")
    assert [c.code() for _ in range(3)] == [250, 250, 354]
    c.send(_body() + b".\r\n")
    assert c.code() == 250
    c.close()
    first, second = server.wait_for(2)
    assert (first.pipelined, second.pipelined) == (False, True)
    assert first.connection == second.connection


def test_a_mail_sent_with_the_previous_dot_is_recorded_as_chained(server):
    c = RawClient(server.port)
    c.ehlo()
    c.send("MAIL FROM:<news@nashra.test>", "RCPT TO:<a@example.test>", "DATA")
    assert [c.code() for _ in range(3)] == [250, 250, 354]
    # The body, its dot and the next envelope in one write (RFC 2920 §3.1) …
    c.send(_body("one") + b".\r\n", "MAIL FROM:<news@nashra.test>", "RCPT TO:<b@example.test>", "DATA")
    assert [c.code() for _ in range(4)] == [250, 250, 250, 354]
    # … and the third envelope only after the second dot's answer.
    c.send(_body("two") + b".\r\n")
    assert c.code() == 250
    c.send("MAIL FROM:<news@nashra.test>", "RCPT TO:<c@example.test>", "DATA")
    assert [c.code() for _ in range(3)] == [250, 250, 354]
    c.send(_body("three") + b".\r\n")
    assert c.code() == 250
    c.close()
    first, second, third = server.wait_for(3)
    assert [t.chained for t in (first, second, third)] == [False, True, False]
    assert [t.message.get_content().strip() for t in (first, second, third)] == ["one", "two", "three"]
    assert all(t.pipelined for t in (first, second, third))


def test_scripted_rcpt_replies_in_a_pipelined_turn(server):
    server.rcpt_replies["gone@example.test"] = "550 5.1.1 no such user"
    server.rcpt_replies["full@example.test"] = "450 4.2.2 mailbox full"
    c = RawClient(server.port)
    c.ehlo()
    c.send(
        "MAIL FROM:<news@nashra.test>",
        "RCPT TO:<gone@example.test>",
        "RCPT TO:<FULL@example.test>",  # replies are scripted case-blind
        "RCPT TO:<ok@example.test>",
        "DATA",
    )
    assert [c.code() for _ in range(5)] == [250, 550, 450, 250, 354]
    c.send(_body() + b".\r\n")
    assert c.code() == 250
    c.close()
    (msg,) = server.wait_for(1)
    assert msg.rcpt_tos == ["ok@example.test"]
    assert msg.refused == {
        "gone@example.test": "550 5.1.1 no such user",
        "FULL@example.test": "450 4.2.2 mailbox full",
    }
    assert msg.pipelined is True


def test_pipelined_data_after_every_recipient_failed_gets_554(server):
    server.rcpt_replies["gone@example.test"] = "550 5.1.1 no such user"
    c = RawClient(server.port)
    c.ehlo()
    c.send("MAIL FROM:<news@nashra.test>", "RCPT TO:<gone@example.test>", "DATA")
    assert [c.code() for _ in range(3)] == [250, 550, 554]
    c.send("NOOP")  # the session goes on
    assert c.code() == 250
    c.close()
    assert server.messages == []
    (txn,) = server.transactions
    assert txn.data is None and txn.reply.startswith("554")


def test_smtplib_sees_scripted_refusals(server):
    server.rcpt_replies["gone@example.test"] = "550 5.1.1 no such user"
    server.data_replies["spam@example.test"] = "554 5.7.1 looks like spam"
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("news@nashra.test", ["gone@example.test"], _body())
        client.rset()
        with pytest.raises(smtplib.SMTPDataError) as err:
            client.sendmail("news@nashra.test", ["spam@example.test"], _body())
        assert err.value.smtp_code == 554
    assert server.messages == []


def test_421_after_n_messages_on_a_connection(server):
    server.messages_per_connection = 2
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        for n in range(2):
            client.sendmail("news@nashra.test", [f"r{n}@example.test"], _body())
        with pytest.raises((smtplib.SMTPSenderRefused, smtplib.SMTPServerDisconnected)) as err:
            client.sendmail("news@nashra.test", ["r2@example.test"], _body())
        if isinstance(err.value, smtplib.SMTPSenderRefused):
            assert err.value.smtp_code == 421
    assert server.wait_until(lambda s: s.current_connections == 0)
    # A new connection may send again.
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.sendmail("news@nashra.test", ["r2@example.test"], _body())
    assert server.recipients() == ["r0@example.test", "r1@example.test", "r2@example.test"]


def test_a_mail_reply_for_everyone(server):
    server.mail_reply = "535 5.7.8 authentication required"
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        with pytest.raises(smtplib.SMTPSenderRefused) as err:
            client.sendmail("news@nashra.test", ["a@example.test"], _body())
    assert err.value.smtp_code == 535
    assert server.messages == []


def test_a_slow_reply_holds_only_its_own_connection(server):
    gate = threading.Event()
    server.rcpt_delays["slow@example.test"] = gate
    slow = RawClient(server.port)
    slow.ehlo()
    slow.send("MAIL FROM:<news@nashra.test>", "RCPT TO:<slow@example.test>", "DATA")
    assert slow.code() == 250  # MAIL answered (flushed before the slow reply), RCPT held

    # Meanwhile another connection goes through.
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        client.sendmail("news@nashra.test", ["fast@example.test"], _body())
    assert server.recipients() == ["fast@example.test"]

    gate.set()
    assert [slow.code(), slow.code()] == [250, 354]
    slow.send(_body() + b".\r\n")
    assert slow.code() == 250
    slow.close()
    server.wait_for(2)
    slow_msg = next(t for t in server.messages if t.rcpt_tos == ["slow@example.test"])
    assert slow_msg.pipelined is True  # RCPT and DATA had arrived before MAIL was answered


def test_counts_connections_and_arrivals(server):
    clients = [RawClient(server.port) for _ in range(3)]  # the greeting means "accepted"
    assert server.max_connections == 3 and server.current_connections == 3
    for c in clients:
        c.close()
    assert server.wait_until(lambda s: s.current_connections == 0)
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10) as client:
        for n in range(5):
            client.sendmail("news@nashra.test", [f"r{n}@example.test"], _body())
    assert server.max_connections == 3  # a high-water mark
    assert server.connections == 4
    assert sum(server.per_second().values()) == 5
    assert 1 <= server.max_in_window(1.0) <= 5
    assert len(server.arrivals) == 5
    assert server.copies()["r0@example.test"] == 1


def test_max_in_window_counts_a_sliding_second():
    srv = PipeliningSmtpServer()
    srv.arrivals = [10.0, 10.5, 10.99, 11.2, 12.5]
    assert srv.max_in_window(1.0) == 3  # 10.0, 10.5, 10.99 (or 10.5, 10.99, 11.2)
    srv.arrivals = [10.0, 11.0, 12.0]
    assert srv.max_in_window(1.0) == 1
    assert srv.per_second() == {10: 1, 11: 1, 12: 1}


def test_commands_out_of_order_are_refused(server):
    c = RawClient(server.port)
    c.send("MAIL FROM:<news@nashra.test>")
    assert c.code() == 503  # EHLO first
    c.ehlo()
    c.send("RCPT TO:<a@example.test>")
    assert c.code() == 503
    c.send("DATA")
    assert c.code() == 503
    c.send("MAIL FROM:news@nashra.test")
    assert c.code() == 501
    c.send("FROB")
    assert c.code() == 500
    c.send("MAIL FROM:<news@nashra.test>", "MAIL FROM:<news@nashra.test>", "RSET")
    assert [c.code() for _ in range(3)] == [250, 503, 250]
    c.close()


def test_without_pipelining_it_is_not_advertised():
    with PipeliningSmtpServer(pipelining=False) as srv:
        c = RawClient(srv.port)
        assert not any("PIPELINING" in line for line in c.ehlo())
        c.close()


def test_stop_closes_open_connections_and_the_port():
    srv = PipeliningSmtpServer().start()
    c = RawClient(srv.port)
    port = srv.port
    srv.stop()
    assert c.file.readline() == b""  # the server hung up
    c.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
