"""`nashra doctor`: one line per check, `ok …` or `FIX: …` (or `unchecked: …` when it
could not tell, e.g. DNS unreachable); exit 0 when nothing needs fixing, 1 otherwise.
The checks are service/usecases/doctor.py's; this module only prints them."""

from __future__ import annotations

import argparse
import sys

from service.config import ConfigError, get_settings
from service.usecases import doctor

EXIT_FIX = 1
_PREFIX = {doctor.OK: "ok  ", doctor.FIX: "FIX:", doctor.UNCHECKED: "unchecked:"}


def cmd_doctor(args) -> int:
    settings = get_settings()
    needs_fixing = 0
    for finding in doctor.run(settings, dns_server=args.dns_server, mx_port=args.mx_port):
        print(f"{_PREFIX[finding.status]} {finding.check}: {finding.message}", flush=True)
        needs_fixing += finding.status == doctor.FIX
    if needs_fixing:
        print(f"{needs_fixing} thing{'s' if needs_fixing > 1 else ''} to fix", file=sys.stderr)
        return EXIT_FIX
    return 0


def settings_failed(exc: ConfigError) -> int:
    """The settings do not load: that is the first finding, and nothing else can be checked."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and lines[0].endswith(":"):  # "invalid configuration:", then one line per variable
        lines = lines[1:]
    for line in lines:
        print(f"FIX: settings: {line}")
    print("(the other checks need the settings: fix these, then run `nashra doctor` again)", file=sys.stderr)
    return EXIT_FIX


def _dns_server(text: str) -> str:
    try:
        return doctor.dns_server_arg(text)
    except ValueError:
        raise argparse.ArgumentTypeError("an IP address, optionally with :PORT (e.g. 1.1.1.1 or [::1]:5353)") from None


def register(sub: argparse._SubParsersAction) -> None:
    dr = sub.add_parser("doctor", help="check settings, database, Redis, each relay, DKIM, SPF, DMARC and "
                        "bounce routing; one line each, exit 1 when something needs fixing")
    dr.add_argument("--dns-server", metavar="IP[:PORT]", type=_dns_server,
                    help="ask this DNS server (default: the system's resolver)")
    dr.add_argument("--mx-port", type=int, default=25,
                    help="the port to try on the bounce domain's MX (default 25)")
    dr.set_defaults(func=cmd_doctor, on_config_error=settings_failed)
