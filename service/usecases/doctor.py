"""`nashra doctor`: is this install ready to send?  Each check is a plain function that
returns findings: ok, fix (what to do) or unchecked (could not tell: DNS unreachable,
port 25 blocked from here).  Only `fix` makes the command exit 1.

Nothing here writes: it connects, asks and says goodbye (SMTP: EHLO, STARTTLS, AUTH and
QUIT — never MAIL, except to the bounce domain's MX, which gets a null sender and two
RCPTs, then RSET, and no message).  Every message is scrubbed of the secrets the
settings hold (passwords in URLs, SECRET_KEY) before it leaves this module.
"""

from __future__ import annotations

import ipaddress
import re
import smtplib
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from service.config import ConfigError, Settings, SmtpTarget
from service.db import make_engine
from service.delivery.compose import bounce_address
from service.delivery.smtp import tls_context
from service.migrate import alembic_config
from service.usecases import dkim as dkim_keys

OK, FIX, UNCHECKED = "ok", "fix", "unchecked"
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
DNS_TIMEOUT = 3.0
DB_TIMEOUT = 5


@dataclass(frozen=True)
class Finding:
    status: str  # OK, FIX or UNCHECKED
    check: str  # what was looked at: "database", "relay 1 (smtp+starttls://host:587)"
    message: str  # what was found, or what to do


class DnsUnavailable(Exception):
    """No DNS server answered (or every one failed): the record could not be checked."""


class Dns:
    """The few lookups the doctor makes, with a short timeout.  `server` is `IP[:PORT]`
    (`--dns-server`); None: the system's resolver (/etc/resolv.conf)."""

    def __init__(self, server: str | None = None, timeout: float = DNS_TIMEOUT):
        # dnspython costs ~0.2 s of imports; only the doctor needs it.
        import dns.resolver

        self._dns = dns
        try:
            self.resolver = dns.resolver.Resolver(configure=server is None)
        except dns.resolver.NoResolverConfiguration as exc:
            raise DnsUnavailable(f"no DNS resolver configured ({exc})") from None
        if server is not None:
            host, port = _host_port(server, 53)
            self.resolver.nameservers = [host]
            self.resolver.port = port
        self.resolver.lifetime = timeout
        self.resolver.timeout = timeout
        self.down: str | None = None
        self.where = server or ", ".join(self.resolver.nameservers) or "the system resolver"

    def _answer(self, name: str, rdtype: str):
        """The rdata of name/rdtype; [] when the name or the type does not exist."""
        if self.down:  # one timeout is enough: the next lookups would wait as long for nothing
            raise DnsUnavailable(self.down)
        resolver = self._dns.resolver
        try:
            return list(self.resolver.resolve(name, rdtype, search=False))
        except (resolver.NXDOMAIN, resolver.NoAnswer):
            return []
        except resolver.LifetimeTimeout:
            self.down = f"no answer from {self.where} within {self.resolver.lifetime:g} s"
        except resolver.NoNameservers:
            self.down = f"{self.where} failed to answer for {name} (unreachable, SERVFAIL or refused)"
        except self._dns.exception.DNSException as exc:
            self.down = f"{type(exc).__name__} from {self.where}: {exc}"
        raise DnsUnavailable(self.down)

    def txt(self, name: str) -> list[str]:
        """Each TXT record of name, its strings joined (as DKIM, SPF and DMARC read them)."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in self._answer(name, "TXT")]

    def mx(self, name: str) -> list[tuple[int, str]]:
        return sorted((r.preference, r.exchange.to_text(omit_final_dot=True)) for r in self._answer(name, "MX"))

    def addresses(self, host: str) -> list[str]:
        return [r.address for t in ("A", "AAAA") for r in self._answer(host, t)]


def dns_server_arg(text: str) -> str:
    """`--dns-server IP[:PORT]`, checked (ValueError naming what is wrong)."""
    host, port = _host_port(text, 53)
    ipaddress.ip_address(host)
    if not 0 < port < 65536:
        raise ValueError(f"port {port} out of range")
    return text


def _host_port(text: str, default: int) -> tuple[str, int]:
    text = text.strip()
    if text.startswith("["):  # [::1]:5353
        host, _, rest = text[1:].partition("]")
        return host, int(rest.lstrip(":") or default)
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default


def _url_without_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rpartition("@")[2]
    user = parts.username or ""
    return parts._replace(netloc=f"{user}:***@{netloc}" if user else f":***@{netloc}").geturl()


def secrets_of(settings: Settings) -> list[str]:
    """Every secret the settings hold, for scrubbing (longest first)."""
    found = {settings.secret_key}
    for url in (settings.database_url, settings.redis_url, settings.bounce_imap_url):
        if url:
            try:
                password = urlsplit(url).password
            except ValueError:
                password = None
            if password:
                found |= {password, unquote(password)}
    try:
        for t in settings.smtp_targets:
            if t.password:
                found.add(t.password)
    except ValueError:
        pass
    for name in ("mailgun_webhook_signing_key", "postmark_webhook_password"):
        value = getattr(settings, name, None)
        if value:
            found.add(value)
    return sorted((s for s in found if s and len(s) >= 3), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, "***")
    return " ".join(_CONTROL.sub(" ", text).split())  # one line, whatever a server answered


# ---------------------------------------------------------------- settings


def check_settings(settings: Settings) -> Iterator[Finding]:
    local = settings.public_url_is_local
    yield Finding(OK, "settings", "loaded" + (f" (PUBLIC_URL {settings.public_url} is local: "
                                               "the production checks below are relaxed)" if local else ""))
    try:
        settings.require_production_secret()
    except ConfigError as exc:
        yield Finding(FIX, "SECRET_KEY", str(exc).removeprefix("SECRET_KEY: "))
    else:
        yield Finding(OK, "SECRET_KEY", "set, not the demo key")
    try:
        settings.require_postal_address()
    except ConfigError as exc:
        yield Finding(FIX, "POSTAL_ADDRESS", str(exc).removeprefix("POSTAL_ADDRESS: "))
    else:
        yield Finding(OK, "POSTAL_ADDRESS", "set" if settings.postal_address.strip() else
                      "empty (fine while PUBLIC_URL is local; required once it is not)")
    if urlsplit(settings.public_url).scheme == "https":
        yield Finding(OK, "PUBLIC_URL", f"{settings.public_url} (https)")
    elif local:
        yield Finding(OK, "PUBLIC_URL", f"{settings.public_url} (local: http is fine)")
    else:
        yield Finding(FIX, "PUBLIC_URL", f"{settings.public_url} is not https: readers' links (unsubscribe, "
                      "preferences) carry their tokens; serve the site over TLS and set PUBLIC_URL=https://…")
    domain = dkim_keys.mail_domain(settings)
    if domain.endswith(".example") and not local:
        yield Finding(FIX, "MAIL_FROM", f"{settings.mail_from_address} is an example address: set MAIL_FROM "
                      "to an address of the newsroom's domain")


# ---------------------------------------------------------------- database, Redis


def _heads() -> set[str]:
    return set(ScriptDirectory.from_config(alembic_config()).get_heads())


def check_database(settings: Settings) -> Iterator[Finding]:
    shown = sa.engine.make_url(settings.database_url).render_as_string(hide_password=True)
    if settings.is_sqlite:
        database = sa.engine.make_url(settings.database_url).database
        if database and database != ":memory:" and not Path(database).exists():
            # Connecting would create an empty file: say so instead.
            yield Finding(FIX, "database", f"no database at {database}: check DATABASE_URL (or VAR_DIR), "
                          "or create it with `nashra db upgrade`")
            return
        engine = make_engine(settings.database_url)
    else:
        engine = sa.create_engine(settings.database_url, poolclass=sa.pool.NullPool,
                                  connect_args={"connect_timeout": DB_TIMEOUT})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:  # noqa: BLE001 — any driver's error: say it, do not crash
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        yield Finding(FIX, "database", f"cannot connect to {shown}: {reason[0] if reason else type(exc).__name__}"
                      " — check DATABASE_URL and that the server is up")
        return
    finally:
        engine.dispose()
    heads = _heads()
    if current == heads:
        yield Finding(OK, "database", f"{shown} reachable, schema at the latest revision ({', '.join(sorted(heads))})")
    elif not current:
        yield Finding(FIX, "database", f"{shown} reachable but has no schema: run `nashra db upgrade`")
    else:
        script = ScriptDirectory.from_config(alembic_config())
        known = {r.revision for r in script.walk_revisions()}
        if current - known:
            yield Finding(FIX, "database", f"{shown} is at revision {', '.join(sorted(current))}, which this "
                          "version of Nashra does not know (a newer one migrated it): run that version, or "
                          "upgrade this one")
        else:
            yield Finding(FIX, "database", f"{shown} is at revision {', '.join(sorted(current))}, the latest is "
                          f"{', '.join(sorted(heads))}: run `nashra db upgrade`")


def check_redis(settings: Settings) -> Iterator[Finding]:
    if not settings.redis_url:
        yield Finding(OK, "redis", "REDIS_URL not set: the embedded broker (one machine; set REDIS_URL "
                      "for workers on several)")
        return
    import redis  # the redis client's import is only worth paying when REDIS_URL is set

    shown = _url_without_password(settings.redis_url)
    client = redis.Redis.from_url(settings.redis_url, socket_connect_timeout=DB_TIMEOUT, socket_timeout=DB_TIMEOUT)
    try:
        client.ping()
        version = client.info("server").get("redis_version", "?")
    except redis.AuthenticationError:
        yield Finding(FIX, "redis", f"{shown} refused the password: check REDIS_URL")
        return
    except redis.RedisError as exc:
        yield Finding(FIX, "redis", f"cannot reach {shown}: {exc} — check REDIS_URL and that Redis is up")
        return
    finally:
        client.close()
    yield Finding(OK, "redis", f"{shown} reachable (Redis {version})")


# ---------------------------------------------------------------- relays


def _size(value: str) -> str:
    try:
        n = int(value)
    except ValueError:
        return f"SIZE {value}"
    return f"SIZE {n} ({n / 1_000_000:.0f} MB)" if n else "SIZE offered (no limit given)"


def check_relay(n: int, total: int, target: SmtpTarget, settings: Settings) -> Finding:
    scheme = {"plain": "smtp", "starttls": "smtp+starttls", "ssl": "smtps"}[target.security]
    name = f"relay {n} of {total} ({scheme}://{target.host}:{target.port})" if total > 1 \
        else f"relay ({scheme}://{target.host}:{target.port})"
    helo = dkim_keys.mail_domain(settings)
    timeout = settings.smtp_connect_timeout
    ctx = tls_context() if target.security in ("ssl", "starttls") else None
    try:
        if target.security == "ssl":
            smtp = smtplib.SMTP_SSL(target.host, target.port, local_hostname=helo, timeout=timeout, context=ctx)
        else:
            smtp = smtplib.SMTP(target.host, target.port, local_hostname=helo, timeout=timeout)
    except ssl.SSLError as exc:
        return Finding(FIX, name, f"TLS handshake failed: {exc.reason or exc} — is the certificate valid for "
                       f"{target.host}? (smtps:// is TLS from the first byte; port 587 usually wants smtp+starttls://)")
    except (OSError, smtplib.SMTPException) as exc:
        why = "no greeting" if isinstance(exc, smtplib.SMTPServerDisconnected) else (
            "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__)
        return Finding(FIX, name, f"cannot connect within SMTP_CONNECT_TIMEOUT ({timeout:g} s): {why} — check "
                       "the host and port in SMTP_URL, and that this machine may reach it (firewall, port 25 blocked)")
    notes: list[str] = []
    problems: list[str] = []
    try:
        smtp.timeout = max(timeout, 10.0)
        code, reply = smtp.ehlo()
        if code != 250:
            return Finding(FIX, name, f"EHLO refused ({code} {reply.decode('utf-8', 'replace')[:120]})")
        greeting = reply.decode("utf-8", "replace").splitlines()[0] if reply else ""
        notes.append(f"EHLO ok ({greeting.split()[0] if greeting.split() else '?'})")
        offered_tls = smtp.has_extn("starttls")
        if target.security == "starttls":
            if not offered_tls:
                return Finding(FIX, name, "STARTTLS not offered, and SMTP_URL asks for it (smtp+starttls://): "
                               "use the relay's TLS port, or smtps:// if it is TLS from the first byte")
            try:
                smtp.starttls(context=ctx)
            except ssl.SSLError as exc:
                return Finding(FIX, name, f"STARTTLS offered but the TLS handshake failed: {exc.reason or exc} "
                               f"— is the certificate valid for {target.host}?")
            smtp.ehlo()
            notes.append("STARTTLS used")
        elif target.security == "ssl":
            notes.append("TLS from the first byte")
        elif offered_tls:
            notes.append("STARTTLS offered but not used (smtp://)")
        else:
            notes.append("no STARTTLS")
        local_relay = _is_loopback(target.host)
        mechanisms = smtp.esmtp_features.get("auth", "").upper().split()
        notes.append(f"AUTH {' '.join(mechanisms)} offered" if mechanisms else "no AUTH offered")
        if target.username:
            if target.security == "plain" and not local_relay:
                problems.append("the password would cross the network unencrypted: use smtp+starttls:// "
                                "(port 587) or smtps:// (465)")
            elif not mechanisms:
                problems.append("SMTP_URL has a user name and password but the relay offers no AUTH"
                                + (" (some offer it only after STARTTLS: use smtp+starttls://)"
                                   if target.security == "plain" and offered_tls else ""))
            else:
                try:
                    smtp.login(target.username, target.password or "")
                    notes.append("login works")
                except smtplib.SMTPAuthenticationError as exc:
                    problems.append(f"login refused ({exc.smtp_code} "
                                    f"{_text(exc.smtp_error)[:120]}): check the user name and password in SMTP_URL")
                except smtplib.SMTPException as exc:
                    problems.append(f"login failed ({exc}): check the user name and password in SMTP_URL")
        elif target.security == "plain" and offered_tls and not local_relay:
            notes.append("consider smtp+starttls:// to encrypt")
        notes.append("PIPELINING offered" if smtp.has_extn("pipelining")
                     else "PIPELINING not offered (each command waits for its reply: slower sends)")
        if smtp.has_extn("size"):
            notes.append(_size(smtp.esmtp_features.get("size", "")))
    except (OSError, smtplib.SMTPException) as exc:
        problems.append(f"the relay dropped the session: {exc or type(exc).__name__}")
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()
    if problems:
        return Finding(FIX, name, "; ".join(problems) + " (" + ", ".join(notes) + ")")
    return Finding(OK, name, ", ".join(notes))


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_relays(settings: Settings) -> Iterator[Finding]:
    targets = settings.smtp_targets
    for n, target in enumerate(targets, 1):
        yield check_relay(n, len(targets), target, settings)


# ---------------------------------------------------------------- DNS: DKIM, SPF, DMARC


def check_dkim(settings: Settings, dns: Callable[[], Dns]) -> Iterator[Finding]:
    selector, path = settings.dkim_selector, settings.dkim_private_key_path
    if not selector and not path:
        if settings.public_url_is_local:
            yield Finding(OK, "DKIM", "not configured (fine for a local trial)")
        else:
            yield Finding(FIX, "DKIM", "not configured: Gmail and Yahoo want bulk mail signed — run `nashra dkim "
                          "keygen --selector S`, publish the record it prints, set DKIM_SELECTOR and "
                          "DKIM_PRIVATE_KEY_PATH")
        return
    if not (selector and path):
        missing = "DKIM_PRIVATE_KEY_PATH" if selector else "DKIM_SELECTOR"
        yield Finding(FIX, "DKIM", f"{missing} is not set (nothing is signed without both)")
        return
    try:
        key = dkim_keys.load_private_key(Path(path))
    except dkim_keys.DkimKeyError as exc:
        yield Finding(FIX, "DKIM key", str(exc))
        return
    kind = f"{key.key_size}-bit RSA" if hasattr(key, "key_size") else "Ed25519"
    mode = Path(path).stat().st_mode & 0o777
    if mode & 0o077:
        yield Finding(FIX, "DKIM key", f"{path} is a valid {kind} private key, but others may read it (mode "
                      f"{mode:04o}): anyone who can sign as {dkim_keys.mail_domain(settings)}; `chmod 600 {path}` "
                      "(as the user the workers run as)")
    else:
        yield Finding(OK, "DKIM key", f"{path} readable, a valid {kind} private key, mode {mode:04o}")
    domain = dkim_keys.mail_domain(settings)
    name = f"{selector}._domainkey.{domain}"
    wanted = f"{name}. IN TXT {dkim_keys.txt_strings(dkim_keys.record_value(key))}"
    try:
        records = dns().txt(name)
    except DnsUnavailable as exc:
        yield Finding(UNCHECKED, "DKIM record", f"could not check the published record: {exc}")
        return
    keys = [r for r in records if "p=" in r]
    if not keys:
        yield Finding(FIX, "DKIM record", f"nothing published at {name}: publish {wanted}")
        return
    for record in keys:
        ok, _ = dkim_keys.record_matches(key, record)
        if ok:
            yield Finding(OK, "DKIM record", f"{name} publishes this key's public key")
            return
    _, why = dkim_keys.record_matches(key, keys[0])
    yield Finding(FIX, "DKIM record", f"{name} does not match DKIM_PRIVATE_KEY_PATH ({why}): publish {wanted} "
                  "— or point DKIM_PRIVATE_KEY_PATH at the key that record was made from")


def _org_domains(domain: str) -> list[str]:
    """domain, then its parents down to two labels (DMARC's organisational domain, without
    the public suffix list: good enough to find the record)."""
    labels = domain.split(".")
    return [".".join(labels[i:]) for i in range(0, max(1, len(labels) - 1))]


def check_spf_dmarc(settings: Settings, dns: Callable[[], Dns]) -> Iterator[Finding]:
    domain = dkim_keys.mail_domain(settings)
    try:
        spf = [r for r in dns().txt(domain) if r.lower().startswith("v=spf1")]
    except DnsUnavailable as exc:
        yield Finding(UNCHECKED, "SPF", f"could not check the published record of {domain}: {exc}")
    else:
        if not spf:
            yield Finding(FIX, "SPF", f"{domain} has no SPF record: publish {domain}. IN TXT \"v=spf1 "
                          "include:<your relay's SPF domain> -all\" (the relay's documentation names it)")
        elif len(spf) > 1:
            yield Finding(FIX, "SPF", f"{domain} has {len(spf)} SPF records; receivers treat that as an error: "
                          "merge them into one")
        else:
            yield Finding(OK, "SPF", f"{domain}: {spf[0][:200]}")
    try:
        dmarc = None
        for candidate in _org_domains(domain):
            found = [r for r in dns().txt(f"_dmarc.{candidate}") if r.upper().startswith("V=DMARC1")]
            if found:
                dmarc = (candidate, found[0])
                break
    except DnsUnavailable as exc:
        yield Finding(UNCHECKED, "DMARC", f"could not check the published record of _dmarc.{domain}: {exc}")
        return
    if dmarc is None:
        yield Finding(FIX, "DMARC", f"no DMARC record for {domain}: publish _dmarc.{domain}. IN TXT "
                      f"\"v=DMARC1; p=none; rua=mailto:dmarc-reports@{domain}\" (Gmail and Yahoo want one "
                      "from bulk senders)")
        return
    where, record = dmarc
    policy = dkim_keys.parse_record(record).get("p", "?")
    yield Finding(OK, "DMARC", f"_dmarc.{where}: p={policy}")


# ---------------------------------------------------------------- bounce routing


def _this_hosts_addresses() -> set[str]:
    found = set()
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            found |= {ai[4][0] for ai in socket.getaddrinfo(name, None)}
        except OSError:
            pass
    return found


def _probe_mx(host: str, port: int, signed: str, forged: str, helo: str) -> tuple[int, int] | str:
    """RCPT replies (signed, forged) from the MX, or why it could not be asked."""
    try:
        smtp = smtplib.SMTP(host, port, local_hostname=helo, timeout=5)
    except (OSError, smtplib.SMTPException) as exc:
        return f"cannot reach {host}:{port} from here ({exc or type(exc).__name__})"
    try:
        smtp.ehlo_or_helo_if_needed()
        code, reply = smtp.mail("")
        if code != 250:
            return f"{host}:{port} refused MAIL FROM:<> ({code} {_text(reply)[:100]}): bounces come from the null sender"
        signed_code = smtp.rcpt(signed)[0]
        forged_code = smtp.rcpt(forged)[0]
        smtp.rset()
        return signed_code, forged_code
    except (OSError, smtplib.SMTPException) as exc:
        return f"{host}:{port} dropped the session ({exc or type(exc).__name__})"
    finally:
        try:
            smtp.quit()
        except (OSError, smtplib.SMTPException):
            smtp.close()


def check_bounce_routing(settings: Settings, dns: Callable[[], Dns], mx_port: int = 25) -> Iterator[Finding]:
    domain = dkim_keys.mail_domain(settings)
    signed = bounce_address(settings, 1)
    local = signed.partition("+")[0]
    shape = f"{local}+b.<id>.<hmac>@{domain}"
    should = ("it should point at the host running `nashra bounces serve` (port 25), or at a mailbox that "
              "`nashra bounces fetch` reads (BOUNCE_IMAP_URL)")
    try:
        mxs = dns().mx(domain)
    except DnsUnavailable as exc:
        yield Finding(UNCHECKED, "bounce routing", f"could not look up the MX of {domain}: {exc}; {should}")
        return
    if not mxs:
        yield Finding(FIX, "bounce routing", f"{domain} has no MX record, so bounces to {shape} are lost: publish "
                      f"{domain}. IN MX 10 <host running `nashra bounces serve`>, or one for the mailbox "
                      "BOUNCE_IMAP_URL reads")
        return
    exchange = mxs[0][1]
    try:
        addresses = dns().addresses(exchange)
    except DnsUnavailable:
        addresses = []
    here = sorted(set(addresses) & _this_hosts_addresses())
    listed = ", ".join(h for _, h in mxs)
    where = f"MX of {domain}: {listed}" + (f" ({exchange} is this host)" if here else "")
    forged = signed.rsplit(".", 1)[0] + ".0000000000@" + domain
    if signed.rsplit("@", 1)[0].endswith(".0000000000"):  # one chance in 2^40
        forged = forged.replace(".0000000000@", ".1111111111@")
    result = _probe_mx(addresses[0] if addresses else exchange, mx_port, signed, forged, domain)
    if isinstance(result, str):
        yield Finding(UNCHECKED, "bounce routing", f"{where}; {result}; {should}")
        return
    signed_code, forged_code = result
    if signed_code in (250, 251) and forged_code >= 500:
        yield Finding(OK, "bounce routing", f"{where}: a Nashra bounce server with this SECRET_KEY answers "
                      f"(a signed {shape} accepted, a forged one refused)")
    elif signed_code in (250, 251):
        if settings.bounce_imap_url:
            yield Finding(OK, "bounce routing", f"{where}: accepts {shape} (a mailbox; BOUNCE_IMAP_URL reads it)")
        else:
            yield Finding(FIX, "bounce routing", f"{where} accepts any address (a mailbox?) but BOUNCE_IMAP_URL "
                          f"is not set, so nobody reads the bounces: set it, or {should}")
    else:
        yield Finding(FIX, "bounce routing", f"{where} refuses {shape} ({signed_code}): {should}; a bounce "
                      "server with another SECRET_KEY refuses them too")


# ---------------------------------------------------------------- all of it


def run(settings: Settings, *, dns_server: str | None = None, mx_port: int = 25) -> Iterator[Finding]:
    """Every check in order, each finding scrubbed of the settings' secrets."""
    secrets = secrets_of(settings)
    resolver: list[Dns] = []

    def dns() -> Dns:
        if not resolver:
            resolver.append(Dns(dns_server))
        return resolver[0]

    checks = [
        lambda: check_settings(settings),
        lambda: check_database(settings),
        lambda: check_redis(settings),
        lambda: check_relays(settings),
        lambda: check_dkim(settings, dns),
        lambda: check_spf_dmarc(settings, dns),
        lambda: check_bounce_routing(settings, dns, mx_port),
    ]
    for check in checks:
        try:
            for f in check():
                yield Finding(f.status, f.check, scrub(f.message, secrets))
        except DnsUnavailable as exc:
            yield Finding(UNCHECKED, "DNS", scrub(f"could not check the published records: {exc}", secrets))
        except Exception as exc:  # noqa: BLE001 — one broken check must not hide the others
            yield Finding(FIX, "doctor", scrub(f"a check failed unexpectedly: {type(exc).__name__}: {exc}", secrets))

