"""A private Dovecot IMAP server for a test: Debian's `dovecot-imapd`, started from a
config of our own in a temporary directory.

It listens on a free loopback port with TLS only (a certificate the fixture makes with
`openssl`, for 127.0.0.1 and localhost), knows one user from a passwd-file, and keeps
its mail as a maildir under the same directory.  The system's own Dovecot (if any) is
never touched: own base_dir, state_dir, instance name and log file.

Dovecot refuses to give mail to root, so when the tests run as root (CI does) the mail
processes run as `nobody`; the directory is made with mkdtemp (world-traversable) since
pytest's own tmp dirs are private to root.  Not as root, everything runs as the current
user.  Under CI=true a missing Dovecot fails the test; elsewhere it skips.
"""

from __future__ import annotations

import imaplib
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.inbound.mailbox import quoted
from tests.support.net import free_port

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
USER = "bounces"
PASSWORD = "imap-pass-0123456789"


def _missing(why: str) -> None:
    if IN_CI:
        pytest.fail(f"Dovecot is required under CI=true (scripts/install-system-deps.sh installs dovecot-imapd): {why}")
    pytest.skip(f"Dovecot not available: {why}")


def _binary(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                      None)


class Dovecot:
    """One running instance; `url(folder)` is a BOUNCE_IMAP_URL for it."""

    def __init__(self, root: Path, *, capabilities: str | None = None):
        self.root = root
        self.port = free_port()
        self.cert = root / "cert.pem"
        self.conf = root / "dovecot.conf"
        self.log = root / "dovecot.log"
        self.capabilities = capabilities
        self.proc: subprocess.Popen | None = None

    # ------------------------------------------------------------ lifecycle

    def _write_config(self) -> None:
        root = self.root
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-keyout", str(root / "key.pem"), "-out", str(self.cert)],
            check=True, capture_output=True, timeout=60,
        )
        home = root / "mail" / USER
        home.mkdir(parents=True)
        if os.getuid() == 0:
            nobody = pwd.getpwnam("nobody")
            uid, gid = nobody.pw_uid, nobody.pw_gid
            os.chown(home, uid, gid)
            login_user, internal_user = "dovenull", "dovecot"
            for name in (login_user, internal_user):
                try:
                    pwd.getpwnam(name)
                except KeyError:
                    _missing(f"system user {name!r} (made by the dovecot-core package) is missing")
            chroot = ""
        else:
            uid, gid = os.getuid(), os.getgid()
            login_user = internal_user = pwd.getpwuid(uid).pw_name
            chroot = "  chroot =\n"
        (root / "passwd").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:{uid}:{gid}::{home}\n")
        capability = f"imap_capability = {self.capabilities}\n" if self.capabilities else ""
        self.conf.write_text(f"""\
base_dir = {root}/run
state_dir = {root}/state
instance_name = nashra-test-{self.port}
protocols = imap
listen = 127.0.0.1
log_path = {self.log}
info_log_path = {self.log}
default_login_user = {login_user}
default_internal_user = {internal_user}
first_valid_uid = 1
first_valid_gid = 1
mail_location = maildir:~/Maildir
auth_mechanisms = plain login
auth_failure_delay = 0
disable_plaintext_auth = no
ssl = required
ssl_cert = <{self.cert}
ssl_key = <{root}/key.pem
{capability}passdb {{
  driver = passwd-file
  args = scheme=PLAIN {root}/passwd
}}
userdb {{
  driver = passwd-file
  args = {root}/passwd
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {self.port}
    ssl = yes
  }}
{chroot}}}
service anvil {{
  chroot =
}}
""")

    def start(self) -> None:
        dovecot = _binary("dovecot")
        if dovecot is None:
            _missing("no `dovecot` binary (apt-get install dovecot-imapd)")
        if shutil.which("openssl") is None:
            _missing("no `openssl` binary")
        self._write_config()
        self.proc = subprocess.Popen([dovecot, "-c", str(self.conf), "-F"], stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode("utf-8", "replace") if self.proc.stdout else ""
                raise RuntimeError(f"dovecot exited ({self.proc.returncode}): {out}\n{self.log_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"dovecot did not listen on {self.port}: {self.log_text()}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()  # the master stops its children
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait(timeout=5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self.proc = None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    # ------------------------------------------------------------ for the tests

    def url(self, folder: str | None = None, *, password: str = PASSWORD) -> str:
        return f"imaps://{USER}:{password}@127.0.0.1:{self.port}" + (f"/{folder}" if folder else "")

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cert))

    def client(self) -> imaplib.IMAP4_SSL:
        imap = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=self.ssl_context(), timeout=30)
        imap.login(USER, PASSWORD)
        return imap

    def append(self, *messages: bytes, folder: str = "INBOX", flags: str | None = None) -> None:
        """Deliver messages into a folder (created when missing), as an MTA's LDA would."""
        imap = self.client()
        try:
            imap.create(quoted(folder))
            for message in messages:
                typ, data = imap.append(quoted(folder), flags, None, message)
                assert typ == "OK", data
        finally:
            imap.logout()

    def folder(self, name: str) -> list[tuple[int, frozenset[str], bytes]]:
        """(uid, flags, message) of every message in a folder; [] when there is no such folder."""
        imap = self.client()
        try:
            typ, _ = imap.select(quoted(name), readonly=True)
            if typ != "OK":
                return []
            typ, data = imap.uid("FETCH", "1:*", "(FLAGS BODY.PEEK[])")
            out = []
            for item in data:
                if isinstance(item, tuple):
                    uid = int(re.search(rb"UID (\d+)", item[0])[1])
                    flags = re.search(rb"FLAGS \(([^)]*)\)", item[0])
                    out.append((uid, frozenset(flags[1].decode().split()) if flags else frozenset(), item[1]))
            return sorted(out)
        finally:
            imap.logout()


def _new_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="nashra-dovecot-"))
    root.chmod(0o755)  # the mail user (nobody) must reach its home below it
    return root


def running_dovecot(*, capabilities: str | None = None) -> Iterator[Dovecot]:
    """For a fixture: `yield from running_dovecot()`."""
    root = _new_root()
    server = Dovecot(root, capabilities=capabilities)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
