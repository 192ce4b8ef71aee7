"""Amazon SNS as a webhook test needs it: keys, a CA, certificates, signed messages, and
an HTTPS server on loopback that answers for `sns.<region>.amazonaws.com`.

The test's CA issues the TLS certificate of that host name; the SNS fetcher
(service.inbound.webhooks.sns.FETCHER) is swapped for one that trusts this CA and
connects the host name to the loopback server — its URL checks still run as in
production.  The server serves the signing certificate (a second key, as SNS's is) and
records every GET, so a test can tell that a refused URL was never fetched.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from service.inbound.webhooks import sns

REGION = "us-east-1"
HOST = f"sns.{REGION}.amazonaws.com"
TOPIC = f"arn:aws:sns:{REGION}:123456789012:nashra-ses-feedback"
CERT_PATH = "/SimpleNotificationService-0000000000000000000000.pem"
CERT_URL = f"https://{HOST}{CERT_PATH}"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool = False, dns: str | None = None,
                 days: int = 30) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(_name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(days=1)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@dataclass
class SnsKeys:
    """The CA, the TLS certificate of HOST, and SNS's signing key and certificate."""

    ca_key: rsa.RSAPrivateKey = field(default_factory=new_key)
    tls_key: rsa.RSAPrivateKey = field(default_factory=new_key)
    signing_key: rsa.RSAPrivateKey = field(default_factory=new_key)

    def __post_init__(self):
        self.ca = _certificate("Nashra Test CA", self.ca_key, "Nashra Test CA", self.ca_key, ca=True)
        self.tls = _certificate(HOST, self.tls_key, "Nashra Test CA", self.ca_key, dns=HOST)
        self.signing = _certificate("sns.amazonaws.com", self.signing_key, "Nashra Test CA", self.ca_key)

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=pem(self.ca).decode())


class SnsServer:
    """HTTPS on a free loopback port: the signing certificate at CERT_PATH, 200 for a
    SubscribeURL; `requests` lists every path asked for."""

    def __init__(self, keys: SnsKeys, tmp_path):
        self.keys = keys
        self.requests: list[str] = []
        served = {CERT_PATH: pem(keys.signing)}
        requests = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 — http.server's name
                requests.append(self.path)
                body = served.get(self.path)
                if body is None and self.path.startswith("/?Action=ConfirmSubscription"):
                    body = b"<ConfirmSubscriptionResponse/>"
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args):
                pass

        cert_file, key_file = tmp_path / "sns-tls.pem", tmp_path / "sns-tls.key"
        cert_file.write_bytes(pem(keys.tls))
        key_file.write_bytes(keys.tls_key.private_bytes(serialization.Encoding.PEM,
                                                        serialization.PrivateFormat.PKCS8,
                                                        serialization.NoEncryption()))
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert_file, key_file)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)

    def fetcher(self, *also: str) -> sns.Fetcher:
        """A fetcher that trusts the test CA and reaches this server for HOST (and `also`)."""
        return sns.Fetcher(verify=self.keys.client_context(),
                           resolve={name: ("127.0.0.1", self.port) for name in (HOST, *also)})


def timestamp(when: dt.datetime | None = None) -> str:
    when = when or dt.datetime.now(dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def signed(fields: dict, key: rsa.RSAPrivateKey, version: str = "1") -> dict:
    """`fields` with SignatureVersion and Signature as SNS computes them."""
    digest = hashes.SHA1() if version == "1" else hashes.SHA256()
    signature = key.sign(sns.canonical(fields), padding.PKCS1v15(), digest)
    return {**fields, "SignatureVersion": version, "Signature": base64.b64encode(signature).decode()}


def notification(ses_event: object, key: rsa.RSAPrivateKey, *, topic: str = TOPIC, cert_url: str = CERT_URL,
                 when: dt.datetime | None = None, version: str = "1", message_id: str | None = None) -> dict:
    """An SNS Notification carrying one SES event (a string: as it is), as SNS posts it."""
    fields = {
        "Type": "Notification",
        "MessageId": message_id or str(uuid.uuid4()),
        "TopicArn": topic,
        "Message": ses_event if isinstance(ses_event, str) else json.dumps(ses_event),
        "Timestamp": timestamp(when),
        "SigningCertURL": cert_url,
        "UnsubscribeURL": f"https://{HOST}/?Action=Unsubscribe&SubscriptionArn={topic}:0000",
    }
    return signed(fields, key, version)


def confirmation(key: rsa.RSAPrivateKey, *, topic: str = TOPIC, cert_url: str = CERT_URL,
                 subscribe_host: str = HOST) -> dict:
    token = "2336412f37fb687f5d51e6e2425c464de12884ef6e9e6fb9a1e9a5e26b1c8b2f"
    fields = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid.uuid4()),
        "Token": token,
        "TopicArn": topic,
        "Message": f"You have chosen to subscribe to the topic {topic}.",
        "SubscribeURL": f"https://{subscribe_host}/?Action=ConfirmSubscription&TopicArn={topic}&Token={token}",
        "Timestamp": timestamp(),
        "SigningCertURL": cert_url,
    }
    return signed(fields, key, "1")


def ses_mail(message_id: str, *, ses_id: str = "0100018c-ses-message-id") -> dict:
    """SES's `mail` object: its own messageId, and the headers as they were sent."""
    return {
        "timestamp": timestamp(),
        "source": "newsletter@nashra.example",
        "sourceArn": "arn:aws:ses:us-east-1:123456789012:identity/nashra.example",
        "sendingAccountId": "123456789012",
        "messageId": ses_id,
        "destination": ["reader@example.com"],
        "headersTruncated": False,
        "headers": [{"name": "From", "value": "Nashra <newsletter@nashra.example>"},
                    {"name": "To", "value": "reader@example.com"},
                    {"name": "Message-ID", "value": message_id},
                    {"name": "Subject", "value": "نشرة الصباح"}],
        "commonHeaders": {"from": ["Nashra <newsletter@nashra.example>"], "to": ["reader@example.com"],
                          "messageId": ses_id, "subject": "نشرة الصباح"},
    }


def ses_bounce(message_id: str, *, bounce_type: str = "Permanent", subtype: str = "General",
               status: str | None = "5.1.1", diagnostic: str | None = "smtp; 550 5.1.1 user unknown",
               feedback_id: str | None = None, key: str = "notificationType") -> dict:
    recipient = {"emailAddress": "reader@example.com", "action": "failed"}
    if status:
        recipient["status"] = status
    if diagnostic:
        recipient["diagnosticCode"] = diagnostic
    return {key: "Bounce", "mail": ses_mail(message_id),
            "bounce": {"bounceType": bounce_type, "bounceSubType": subtype, "bouncedRecipients": [recipient],
                       "timestamp": timestamp(), "feedbackId": feedback_id or f"0100-{uuid.uuid4()}-000000",
                       "reportingMTA": "dsn; a27-30.smtp-out.us-east-1.amazonses.com"}}


def ses_complaint(message_id: str, *, feedback_type: str | None = "abuse") -> dict:
    complaint = {"complainedRecipients": [{"emailAddress": "reader@example.com"}], "timestamp": timestamp(),
                 "feedbackId": f"0100-{uuid.uuid4()}-000000", "userAgent": "Yahoo!-Mail-Feedback/2.0",
                 "arrivalDate": timestamp()}
    if feedback_type:
        complaint["complaintFeedbackType"] = feedback_type
    return {"notificationType": "Complaint", "mail": ses_mail(message_id), "complaint": complaint}


def ses_delivery(message_id: str) -> dict:
    return {"notificationType": "Delivery", "mail": ses_mail(message_id, ses_id=f"0100-{uuid.uuid4()}"),
            "delivery": {"timestamp": timestamp(), "processingTimeMillis": 546, "recipients": ["reader@example.com"],
                         "smtpResponse": "250 ok:  Message 64111812 accepted",
                         "reportingMTA": "a8-70.smtp-out.amazonses.com"}}
