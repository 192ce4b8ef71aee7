"""`nashra suppressions list|lift`: the suppression list for operators, without SQL.

The operator at the console is an admin by definition (as for `nashra edition`): a lift
here may take a complaint off the list too.  The table shows addresses — it is for the
person at the terminal — but nothing here writes one to a log line or the audit log
(service/subscribers/suppression.py keeps the reason and the suppression's id there).
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import unicodedata

from service.config import get_settings
from service.usecases import suppressions

LIST_LIMIT = 100
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2


def _when(value: dt.datetime | None) -> str:
    """Local time (TIMEZONE), to the minute, as `nashra editors list` shows it."""
    if value is None:
        return "-"
    if value.tzinfo is None:  # SQLite hands back naive UTC
        value = value.replace(tzinfo=dt.UTC)
    return value.astimezone(get_settings().tz).strftime("%Y-%m-%d %H:%M")


def _plain(text: str | None) -> str:
    """One line with no control characters: a detail may quote a remote server's reply."""
    text = "".join(c if unicodedata.category(c)[0] != "C" else " " for c in (text or ""))
    return " ".join(text.split()) or "-"


def _limit(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = 0
    if not 1 <= n <= 1000:
        raise argparse.ArgumentTypeError("a number from 1 to 1000")
    return n


def cmd_list(args) -> int:
    try:
        rows = suppressions.listing(args.search or None, args.limit + 1, reason=args.reason)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    more, rows = len(rows) > args.limit, rows[:args.limit]
    if not rows:
        what = " ".join(filter(None, [f"for reason {args.reason}" if args.reason else "",
                                      "matching the search" if args.search else ""]))
        print(f"no suppressions {what}".strip())
        return 0
    width = max(len("address"), *(len(r.email) for r in rows))
    print(f"{'id':>6}  {'address':<{width}}  {'reason':<11}  {'since':<16}  detail")
    for r in rows:
        print(f"{r.id:>6}  {r.email:<{width}}  {r.reason:<11}  {_when(r.created_at):<16}  {_plain(r.detail)}")
    if more:
        print(f"(the newest {args.limit} shown; narrow with --reason or --search, or raise --limit)")
    return 0


def cmd_lift(args) -> int:
    try:
        lifted = suppressions.lift_address(args.email, args.why, actor="cli", by_admin=True)
    except suppressions.LiftRefused as exc:
        print(f"error: {exc} (nothing was changed)", file=sys.stderr)
        return EXIT_USAGE
    if lifted is None:
        print("error: that address is not on the suppression list (nothing was changed); "
              "`nashra suppressions list --search PART` shows what is", file=sys.stderr)
        return EXIT_NOT_FOUND
    if lifted.id is None:
        print(f"lifted: the address had been forgotten and was kept as a keyed hash that blocked it ({lifted.was}); "
              "it may sign up again now. The reason is in the audit log.")
    else:
        print(f"suppression {lifted.id} lifted (was {lifted.was} since {_when(lifted.since)}): the address may be "
              "mailed again. The reason is in the audit log.")
    if lifted.reader_status == "unsubscribed":
        print("the reader is unsubscribed (as a complaint leaves them) and stays so until they sign up again")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    """Add `suppressions list|lift` to the `nashra` parser."""
    sp = sub.add_parser("suppressions", help="addresses we never mail (bounces, complaints): list, lift one",
                        description="The suppression list. The operator at the console acts as an admin: "
                                    "`lift` takes any suppression off the list, a complaint too.")
    sps = sp.add_subparsers(dest="suppressions_command", required=True)
    sl = sps.add_parser("list", help="the newest suppressions: id, address, reason, since, detail")
    sl.add_argument("--reason", choices=suppressions.REASONS, help="only this reason")
    sl.add_argument("--search", metavar="TEXT", help="only addresses that contain TEXT")
    sl.add_argument("--limit", type=_limit, default=LIST_LIMIT, metavar="N",
                    help=f"at most N rows (1-1000, default {LIST_LIMIT})")
    sl.set_defaults(func=cmd_list)
    lf = sps.add_parser("lift", help="take one address off the list, with a reason kept in the audit log "
                                     "(as an admin: complaints too)",
                        description="Take EMAIL off the suppression list (or lift the block a forgotten reader's "
                                    "keyed hash keeps). The operator is an admin: a complaint may be lifted here; "
                                    "on the web only admins can. Exit 1: the address is not suppressed; "
                                    "exit 2: no usable --why.")
    lf.add_argument("email", metavar="EMAIL")
    lf.add_argument("--why", required=True, metavar="TEXT", help="why it may be mailed again (kept in the audit log)")
    lf.set_defaults(func=cmd_lift)
