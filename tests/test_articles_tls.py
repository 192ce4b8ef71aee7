"""HTTPS through the guarded transport: the connection goes to the address that was
checked, while TLS still verifies the host name (no DNS rebinding window, no bypass)."""

from __future__ import annotations

import http.server
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from service.articles.fetch import FetchError, fetch_feed
from service.config import load_settings

DEMO = Path(__file__).resolve().parent.parent / "service" / "demo" / "sample_feed.xml"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


@pytest.fixture
def https_feed(tmp_path, monkeypatch):
    """An HTTPS server on loopback with a certificate for feeds.test from a test CA."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
             "-days", "2", "-subj", "/CN=Nashra Test CA", cwd=tmp_path)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr",
             "-subj", "/CN=feeds.test", cwd=tmp_path)  # fmt: skip
    (tmp_path / "ext.cnf").write_text("subjectAltName=DNS:feeds.test\n")
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-out", "srv.pem", "-days", "2", "-extfile", "ext.cnf", cwd=tmp_path)  # fmt: skip
    body = DEMO.read_bytes()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/rss+xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tmp_path / "srv.pem", tmp_path / "srv.key")
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    yield httpd.server_address[1], body
    httpd.shutdown()
    httpd.server_close()


def _resolve_to_loopback(monkeypatch, seen: list):
    # Stands in for DNS answering a public address: "feeds.test" exists in no resolver,
    # so a successful fetch proves the connection went where the check said.
    def resolve(host, port, *, allow_private):
        seen.append((host, allow_private))
        return "127.0.0.1"

    monkeypatch.setattr("service.articles.transport.resolve_checked", resolve)


def test_https_connects_to_the_checked_address_and_verifies_the_name(https_feed, monkeypatch):
    port, body = https_feed
    seen: list = []
    _resolve_to_loopback(monkeypatch, seen)
    result = fetch_feed(f"https://feeds.test:{port}/feed.xml", load_settings(feed_allow_private=False))
    assert result.status == 200 and result.body == body
    assert seen == [("feeds.test", False)]


def test_a_name_the_certificate_does_not_cover_is_refused(https_feed, monkeypatch):
    port, _ = https_feed
    _resolve_to_loopback(monkeypatch, [])
    with pytest.raises(FetchError, match="connection failed: ConnectError: .*(certificate|hostname)"):
        fetch_feed(f"https://other.test:{port}/feed.xml", load_settings(feed_allow_private=False))
