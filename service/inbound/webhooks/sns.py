"""Amazon SNS's envelope: the signature over a message's fields, the signing certificate
it names, and the confirmation of a new subscription.

SNS signs the canonical string of a message's fields ("Name\\nvalue\\n" for each, in
this order; `Subject` only when present) with the key of a certificate it publishes at
`SigningCertURL`: SHA1withRSA for SignatureVersion 1, SHA256withRSA for 2.  Anyone can
post a message naming a certificate of their own, so the URL is checked *before* it is
fetched: https, no port, no user, and a host that is exactly `sns.<region>.amazonaws.com`
— the certificate then is Amazon's because TLS says that host is.  Certificates are kept
in this process by URL (SNS uses one for months), never fetched from anywhere else.

`FETCHER` does the GETs (the certificate, the SubscribeURL).  Tests swap it for one that
reaches a loopback server under the real host name and trusts a CA they made; the URL
checks above stay in force whatever the fetcher.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
import ssl
import threading
import time
from collections.abc import Mapping
from urllib.parse import parse_qs, urlsplit

import httpcore
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from service.inbound.webhooks.common import Refused, check_age, from_iso, text

TYPES = ("Notification", "SubscriptionConfirmation", "UnsubscribeConfirmation")
_NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
# sns.us-east-1.amazonaws.com, sns.us-gov-west-1.amazonaws.com, sns.ap-southeast-4.amazonaws.com.
SNS_HOST = re.compile(r"^sns\.[a-z]{2}(?:-[a-z]+)+-\d{1,2}\.amazonaws\.com$")
_HASHES = {"1": hashes.SHA1, "2": hashes.SHA256}
MAX_CERT_BYTES = 64 * 1024
CERT_CACHE_SIZE = 32


def checked_url(url: object, what: str, *, path_suffix: str | None = None) -> str:
    """`url` if it is https on an SNS host of Amazon's (no port, no user), else Refused."""
    raw = text(url, 2000)
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise Refused(403, f"{what} is not a URL") from None
    host = parts.hostname or ""
    if (parts.scheme != "https" or port is not None or parts.username is not None or parts.password is not None
            or parts.netloc != host or not SNS_HOST.match(host)):
        raise Refused(403, f"{what} is not an https URL on an sns.<region>.amazonaws.com host")
    if path_suffix and not parts.path.endswith(path_suffix):
        raise Refused(403, f"{what} does not name a {path_suffix} file")
    return raw


class Fetcher:
    """GETs from SNS: a short timeout, a size cap, no redirects, no proxy from the
    environment.  `resolve` (host → (address, port)) and `verify` (an SSLContext) exist
    for the tests; production uses neither.  httpcore (httpx's own engine) rather than httpx:
    it has a public way to choose where a host name connects, with TLS unchanged (SNI
    and the certificate's name are still the URL's host)."""

    def __init__(self, *, verify: ssl.SSLContext | None = None,
                 resolve: Mapping[str, tuple[str, int]] | None = None,
                 timeout: float = 5.0):
        self.verify = verify
        self.resolve = dict(resolve or {})
        self.timeout = timeout

    def get(self, url: str, limit: int = MAX_CERT_BYTES) -> bytes:
        context = self.verify or ssl.create_default_context()
        backend = _Resolving(self.resolve) if self.resolve else None
        timeouts = dict.fromkeys(("connect", "read", "write", "pool"), self.timeout)
        try:
            with (httpcore.ConnectionPool(ssl_context=context, network_backend=backend) as pool,
                  pool.stream("GET", url, extensions={"timeout": timeouts}) as response):
                if response.status != 200:
                    raise Refused(403, f"SNS answered {response.status}")
                body = b""
                deadline = time.monotonic() + 2 * self.timeout  # a trickle is no answer either
                for chunk in response.iter_stream():
                    body += chunk
                    if len(body) > limit or time.monotonic() > deadline:
                        raise Refused(403, "SNS's answer is too large or too slow")
                return body
        except (httpcore.TimeoutException, httpcore.NetworkError, httpcore.ProtocolError,
                httpcore.UnsupportedProtocol, OSError) as exc:
            # A 4xx, not a 5xx, though the fault may be the network's: the URL is what the
            # request sent, and nothing a client sends may make us answer 5xx.  The price:
            # a real notification that meets a failed fetch is dropped (its reader's next
            # bounce comes back the same way).
            raise Refused(403, f"SNS could not be reached ({type(exc).__name__})") from None


class _Resolving(httpcore.SyncBackend):
    def __init__(self, resolve: Mapping[str, tuple[str, int]]):
        self.resolve = resolve

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        host, port = self.resolve.get(host, (host, port))
        return super().connect_tcp(host, port, timeout, local_address, socket_options)


FETCHER = Fetcher()
_certs: dict[str, tuple[rsa.RSAPublicKey, dt.datetime]] = {}
_certs_lock = threading.Lock()


def forget_certificates() -> None:
    with _certs_lock:
        _certs.clear()


def _public_key(url: str, now: dt.datetime) -> rsa.RSAPublicKey:
    with _certs_lock:
        cached = _certs.get(url)
    if cached is not None and cached[1] > now:
        return cached[0]
    pem = FETCHER.get(url)
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise Refused(403, "the signing certificate is not a PEM certificate") from None
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise Refused(403, "the signing certificate holds no RSA key")
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise Refused(403, "the signing certificate is not valid now")
    with _certs_lock:
        if len(_certs) >= CERT_CACHE_SIZE:
            _certs.pop(next(iter(_certs)))
        _certs[url] = (key, cert.not_valid_after_utc)
    return key


def canonical(message: dict) -> bytes:
    fields = _NOTIFICATION_FIELDS if message.get("Type") == "Notification" else _CONFIRMATION_FIELDS
    out = []
    for name in fields:
        if name == "Subject" and name not in message:
            continue
        out.append(f"{name}\n{message[name]}\n")
    return "".join(out).encode()


def verify(message: dict, topics: list[str], now: dt.datetime, max_age: int) -> None:
    """Refused unless `message` is an SNS message of one of `topics`, recent, signed by SNS."""
    kind = message.get("Type")
    if kind not in TYPES:
        raise Refused(400, "not an SNS message")
    needed = _NOTIFICATION_FIELDS if kind == "Notification" else _CONFIRMATION_FIELDS
    for name in (*needed, "Signature", "SignatureVersion", "SigningCertURL"):
        if name == "Subject" and name not in message:
            continue
        if not isinstance(message.get(name), str):
            raise Refused(400, f"SNS field {name} missing")
    if message["TopicArn"] not in topics:
        raise Refused(403, "a topic not in SES_TOPIC_ARNS")
    check_age(from_iso(message["Timestamp"]), now, max_age, "the SNS message")
    digest = _HASHES.get(message["SignatureVersion"])
    if digest is None:
        raise Refused(403, "an unknown SignatureVersion")
    try:
        signature = base64.b64decode(message["Signature"], validate=True)
    except (binascii.Error, ValueError):
        raise Refused(403, "the signature is not base64") from None
    url = checked_url(message["SigningCertURL"], "SigningCertURL", path_suffix=".pem")
    key = _public_key(url, now)
    try:
        key.verify(signature, canonical(message), padding.PKCS1v15(), digest())
    except InvalidSignature:
        raise Refused(403, "the SNS signature does not verify") from None


def confirm(message: dict) -> None:
    """Follow the SubscribeURL of a verified SubscriptionConfirmation."""
    url = checked_url(message.get("SubscribeURL"), "SubscribeURL")
    query = parse_qs(urlsplit(url).query)
    if query.get("Action") != ["ConfirmSubscription"]:
        raise Refused(403, "the SubscribeURL does not confirm a subscription")
    FETCHER.get(url)
