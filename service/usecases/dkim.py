"""DKIM keys: make one (`nashra dkim keygen`), the DNS record that publishes it, and
whether a published record holds a given key (`nashra doctor`).

Signing itself is in service/delivery/compose.py (dkimpy, DKIM_SELECTOR and
DKIM_PRIVATE_KEY_PATH, d= being MAIL_FROM's domain as A-labels).  The key is written
as PKCS#1 PEM ("BEGIN RSA PRIVATE KEY"), the form dkimpy and OpenDKIM read, readable
by its owner only.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from service.config import Settings

KEY_BITS = (1024, 2048, 3072, 4096)
DEFAULT_BITS = 2048
# One character-string of a TXT record holds at most 255 bytes (RFC 1035 §3.3.14); a
# longer value is written as several, which resolvers hand back joined.
TXT_CHUNK = 255
_SELECTOR = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")


class DkimKeyError(Exception):
    """What is wrong, said so that an operator knows what to do."""


@dataclass(frozen=True)
class NewKey:
    path: Path
    selector: str
    domain: str
    bits: int
    record_name: str  # s._domainkey.example.com
    record_value: str  # v=DKIM1; k=rsa; p=…

    @property
    def zone_line(self) -> str:
        """The record as a zone-file line, its value in strings of at most 255 characters."""
        return f"{self.record_name}. IN TXT {txt_strings(self.record_value)}"


def mail_domain(settings: Settings) -> str:
    """MAIL_FROM's domain as A-labels: DKIM's d=, where SPF and DMARC are looked up."""
    return settings.mail_from_address.rpartition("@")[2].lower()


def check_selector(selector: str) -> str:
    if not _SELECTOR.match(selector or "") or len(selector) > 200:
        raise DkimKeyError(f"--selector {selector[:40]!r}: a DNS label is needed (letters, digits, "
                           "hyphens; e.g. nashra2026)")
    return selector


def txt_strings(value: str) -> str:
    """`"…" "…"`: the value cut into quoted strings of at most 255 characters."""
    return " ".join(f'"{value[i:i + TXT_CHUNK]}"' for i in range(0, len(value), TXT_CHUNK))


def public_key_b64(private_key) -> tuple[str, str]:
    """(k=, p=) for a private key: rsa and the SubjectPublicKeyInfo, or ed25519 and its 32 bytes."""
    public = private_key.public_key()
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return "ed25519", base64.b64encode(raw).decode()
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "rsa", base64.b64encode(der).decode()


def record_value(private_key) -> str:
    k, p = public_key_b64(private_key)
    return f"v=DKIM1; k={k}; p={p}"


def generate(settings: Settings, selector: str, path: Path, *, bits: int = DEFAULT_BITS,
             force: bool = False) -> NewKey:
    """Make an RSA key, write it to `path` (mode 0600; an existing file only with force)."""
    check_selector(selector)
    if bits not in KEY_BITS:
        raise DkimKeyError(f"--bits must be one of {', '.join(map(str, KEY_BITS))}")
    if path.exists() and not force:
        raise DkimKeyError(f"{path} exists; nothing was written (pass --force to replace it, and "
                           "publish the new record before the old one is removed)")
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                            serialization.NoEncryption())
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise DkimKeyError(f"{path} exists; nothing was written (pass --force to replace it)") from None
    except OSError as exc:
        raise DkimKeyError(f"cannot write {path}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fh.fileno(), 0o600)  # a replaced file keeps its old mode otherwise
        fh.write(pem)
    domain = mail_domain(settings)
    return NewKey(path=path, selector=selector, domain=domain, bits=bits,
                  record_name=f"{selector}._domainkey.{domain}", record_value=record_value(key))


def load_private_key(path: Path):
    """The key at path, or DkimKeyError saying why not (never quoting the file)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DkimKeyError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise DkimKeyError(f"{path} is encrypted with a passphrase; DKIM signing needs it without one") from None
    except (ValueError, binascii.Error):
        raise DkimKeyError(f"{path} is not a PEM private key") from None
    except Exception as exc:  # noqa: BLE001 — cryptography raises UnsupportedAlgorithm and others
        raise DkimKeyError(f"{path} is not a usable private key ({type(exc).__name__})") from None
    if isinstance(key, rsa.RSAPrivateKey):
        if key.key_size < 1024:
            raise DkimKeyError(f"{path} is a {key.key_size}-bit RSA key; receivers ignore keys under "
                               "1024 bits: make a new one with `nashra dkim keygen`")
        return key
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    raise DkimKeyError(f"{path} is a {type(key).__name__.removeprefix('_')}; DKIM takes RSA (or Ed25519) keys")


def parse_record(text: str) -> dict[str, str]:
    """A DKIM key record's tags (`v=DKIM1; k=rsa; p=…`); whitespace in p= is dropped."""
    tags = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip().lower()] = value.strip()
    if "p" in tags:
        tags["p"] = "".join(tags["p"].split())
    return tags


def record_matches(private_key, published: str) -> tuple[bool, str]:
    """(True, "") when the published record's p= is this key's public key, else (False, why)."""
    tags = parse_record(published)
    if tags.get("v", "DKIM1") != "DKIM1":
        return False, f"v={tags['v']} (must be DKIM1)"
    if "p" not in tags:
        return False, "it has no p= tag"
    if not tags["p"]:
        return False, "its p= is empty (the key is revoked)"
    mine_k, mine_p = public_key_b64(private_key)
    if tags.get("k", "rsa").lower() != mine_k:
        return False, f"k={tags.get('k')} but the key is {mine_k}"
    try:
        theirs = base64.b64decode(tags["p"], validate=True)
    except (ValueError, binascii.Error):
        return False, "its p= is not base64"
    if mine_k == "ed25519":
        same = theirs == base64.b64decode(mine_p)
        return same, "" if same else "its p= is another key's public key"
    try:
        # SubjectPublicKeyInfo (what everyone publishes) or a bare PKCS#1 RSAPublicKey.
        public = serialization.load_der_public_key(theirs)
    except (ValueError, TypeError):
        return False, "its p= is not an RSA public key"
    if not isinstance(public, rsa.RSAPublicKey) or \
            public.public_numbers() != private_key.public_key().public_numbers():
        return False, "its p= is another key's public key"
    return True, ""
