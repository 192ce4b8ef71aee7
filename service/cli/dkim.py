"""`nashra dkim keygen --selector S [--bits 2048] [--out PATH] [--force]`: make a DKIM
key, write it readable by its owner only, print the DNS record to publish and the two
settings that turn signing on (service/usecases/dkim.py does the work)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from service.config import get_settings
from service.usecases import dkim

EXIT_USAGE = 2


def cmd_keygen(args) -> int:
    settings = get_settings()
    out = Path(args.out) if args.out else settings.var_dir / "dkim" / f"{args.selector}.private.pem"
    try:
        key = dkim.generate(settings, args.selector, out.expanduser().absolute(), bits=args.bits, force=args.force)
    except dkim.DkimKeyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(f"wrote a {key.bits}-bit RSA private key to {key.path} (mode 0600: keep it that way, and back it up)")
    print()
    print(f"1. publish this TXT record in the DNS of {key.domain} (MAIL_FROM's domain):")
    print()
    print(f"   {key.zone_line}")
    print()
    print("   (a DNS provider's web form takes the name without the domain and the value as one")
    print(f"   string: name {key.selector}._domainkey, value {key.record_value})")
    print()
    print("2. once it is visible (`dig +short TXT " f"{key.record_name}`), set:")
    print()
    print(f"   DKIM_SELECTOR={key.selector}")
    print(f"   DKIM_PRIVATE_KEY_PATH={key.path}")
    print()
    print("3. check with `nashra doctor` that the published record matches the key")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    dk = sub.add_parser("dkim", help="DKIM signing keys")
    dks = dk.add_subparsers(dest="dkim_command", required=True)
    kg = dks.add_parser("keygen", help="make a DKIM key, print the DNS TXT record to publish and the settings")
    kg.add_argument("--selector", required=True, help="the selector (the DNS label before ._domainkey), e.g. nashra2026")
    kg.add_argument("--bits", type=int, choices=dkim.KEY_BITS, default=dkim.DEFAULT_BITS,
                    help=f"RSA key size (default {dkim.DEFAULT_BITS})")
    kg.add_argument("--out", metavar="PATH", help="where to write the private key "
                    "(default: VAR_DIR/dkim/SELECTOR.private.pem)")
    kg.add_argument("--force", action="store_true", help="replace an existing file at PATH")
    kg.set_defaults(func=cmd_keygen)
