"""A small authoritative DNS server for tests: UDP on loopback, answering from a dict.

    with DnsServer({("example.test", "TXT"): ['"v=spf1 -all"'],
                    ("example.test", "MX"): ["10 mx.example.test."]}) as dns:
        ... dns.address  # "127.0.0.1:PORT", e.g. for `nashra doctor --dns-server`

A name with no record of the asked type answers NOERROR with no answer (NoAnswer); a
name not in the dict at all answers NXDOMAIN.  Records are zone-file text (dnspython).
"""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset


class DnsServer:
    def __init__(self, records: dict[tuple[str, str], list[str]]):
        self.records = {(dns.name.from_text(n), t.upper()): v for (n, t), v in records.items()}
        self.queries: list[tuple[str, str]] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="test-dns")

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _answer(self, wire: bytes) -> bytes:
        query = dns.message.from_wire(wire)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        q = query.question[0]
        rdtype = dns.rdatatype.to_text(q.rdtype)
        self.queries.append((q.name.to_text(omit_final_dot=True), rdtype))
        texts = self.records.get((q.name, rdtype))
        if texts:
            response.answer.append(dns.rrset.from_text_list(q.name, 60, "IN", rdtype, texts))
        elif not any(name == q.name for name, _ in self.records):
            response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except (TimeoutError, OSError):
                continue
            try:
                self._sock.sendto(self._answer(wire), peer)
            except Exception:  # noqa: BLE001 — a bad query gets no answer, as from a real server
                continue
