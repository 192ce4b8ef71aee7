"""`nashra newsletters list|add|edit|hide`: the site's newsletters for operators, over
usecases.newsletters (which checks every value and writes the audit line).

Exit codes: 0 done (or nothing to change), 2 refused — the message says why, in Arabic
as on the admins' page, and nothing was changed.
"""

from __future__ import annotations

import argparse
import sys

from service.config import get_settings
from service.usecases import newsletters

EXIT_REFUSED = 2


def _refused(exc: Exception) -> int:
    print(f"error: {exc} (nothing was changed)", file=sys.stderr)
    return EXIT_REFUSED


def _yes(value: bool) -> str:
    return "yes" if value else "no"


def cmd_list(args) -> int:
    get_settings()
    rows = newsletters.listing()
    if not rows:
        print("no newsletters: `nashra db upgrade` makes the first three")
        return 0
    header = ("slug", "name", "kind", "schedule", "sections", "offered", "hidden", "readers")
    table = [(r.slug, r.name, r.kind, r.schedule_en, ", ".join(r.sections) or "all", _yes(r.offered),
              _yes(r.hidden), str(r.readers)) for r in rows]
    widths = [max(len(h), *(len(t[i]) for t in table)) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)).rstrip())
    return 0


def _options(args) -> dict:
    """The options given (None: not given, left as it is)."""
    names = {"frequency": "frequency", "hour": "hour", "day": "day", "sections": "sections",
             "from_name": "from_name", "list_id": "list_id", "description": "description"}
    return {field: getattr(args, attr) for field, attr in names.items() if getattr(args, attr) is not None}


def cmd_add(args) -> int:
    get_settings()
    try:
        row = newsletters.add(args.name, slug=args.slug, kind=args.kind, offered=not args.not_offered,
                              actor="cli", **_options(args))
    except newsletters.NewsletterError as exc:
        return _refused(exc)
    print(f"newsletter {row.id}: {row.name} [{row.slug}], {row.kind}, {row.schedule_en}; List-Id {row.list_id}"
          + ("" if row.offered else "; not offered on the signup form"))
    return 0


def cmd_edit(args) -> int:
    get_settings()
    changes = _options(args)
    if args.name is not None:
        changes["name"] = args.name
    if args.new_slug is not None:
        changes["slug"] = args.new_slug
    if args.kind is not None:
        changes["kind"] = args.kind
    if args.offered is not None:
        changes["offered"] = args.offered
    if not changes:
        print("error: nothing to change: give an option (see `nashra newsletters edit --help`)", file=sys.stderr)
        return EXIT_REFUSED
    try:
        row, changed = newsletters.edit(args.newsletter, actor="cli", **changes)
    except newsletters.NewsletterError as exc:
        return _refused(exc)
    if not changed:
        print(f"{row.name} [{row.slug}]: nothing changed")
    else:
        print(f"{row.name} [{row.slug}]: changed {', '.join(changed)}; {row.kind}, {row.schedule_en}; "
              f"List-Id {row.list_id}")
    return 0


def cmd_hide(args) -> int:
    get_settings()
    hidden = not args.show
    try:
        row, changed = newsletters.hide(args.newsletter, hidden, actor="cli")
    except newsletters.NewsletterError as exc:
        return _refused(exc)
    if not changed:
        print(f"{row.name} [{row.slug}] was already {'hidden' if hidden else 'shown'}")
    elif hidden:
        print(f"{row.name} [{row.slug}] hidden: not offered, nothing new is made for it; its {row.readers} "
              "reader(s) keep their subscription should it come back (`--show`)")
        if row.scheduled:
            print(f"  its {len(row.scheduled)} scheduled edition(s) still go at their time: "
                  + ", ".join(str(i) for i in row.scheduled)
                  + " (`nashra edition cancel EDITION` stops one)")
    else:
        print(f"{row.name} [{row.slug}] is back" + ("" if row.offered else " (not offered on the signup form)"))
    return 0


def _shape_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--frequency", choices=["daily", "weekly"], help="a digest's cadence (default daily)")
    p.add_argument("--hour", metavar="H", help="a digest's default local hour, one of DIGEST_HOURS "
                   "('default': the site's, DIGEST_DAILY_AT)")
    p.add_argument("--day", metavar="D", help="a weekly digest's default day, 0 = Monday … 6 = Sunday "
                   "('default': DIGEST_WEEKLY_DAY)")
    p.add_argument("--sections", metavar="A,B", help="the sections it draws from (slugs or names; '' = all)")
    p.add_argument("--from-name", metavar="N", help="the From display name of its mail (the address stays "
                   "MAIL_FROM's; '' = MAIL_FROM's name)")
    p.add_argument("--list-id", metavar="ID", help="its List-Id, e.g. sports.nashra.example ('' = made from the slug)")
    p.add_argument("--description", metavar="T", help="what the signup form says of it")


def register(sub: argparse._SubParsersAction) -> None:
    """Add `newsletters list|add|edit|hide` to the `nashra` parser."""
    nl = sub.add_parser("newsletters", help="the site's newsletters: list, add, edit, hide",
                        description="The newsletters readers can be on, each left on its own. Exit 2: a value "
                                    "was refused (the message says why) and nothing was changed.")
    nls = nl.add_subparsers(dest="newsletters_command", required=True)
    nls.add_parser("list", help="every newsletter: slug, name, kind, schedule, sections, offered, hidden, "
                   "readers").set_defaults(func=cmd_list)
    a = nls.add_parser("add", help="add a newsletter (last in the site's order)")
    a.add_argument("name")
    a.add_argument("--slug", required=True, help="its stable identifier (a-z, 0-9, -)")
    a.add_argument("--kind", required=True, choices=["digest", "alerts"])
    _shape_options(a)
    a.add_argument("--not-offered", action="store_true", help="do not offer it on the signup form (yet)")
    a.set_defaults(func=cmd_add)
    e = nls.add_parser("edit", help="change a newsletter (only what is given)")
    e.add_argument("newsletter", metavar="SLUG", help="its slug (or id)")
    e.add_argument("--name")
    e.add_argument("--slug", dest="new_slug", metavar="S", help="a new slug (not for daily, weekly, alerts)")
    e.add_argument("--kind", choices=["digest", "alerts"], help="only while nobody is on it")
    _shape_options(e)
    offered = e.add_mutually_exclusive_group()
    offered.add_argument("--offered", dest="offered", action="store_const", const=True,
                         help="offer it on the signup form")
    offered.add_argument("--not-offered", dest="offered", action="store_const", const=False,
                         help="stop offering it on the signup form (its readers stay)")
    e.set_defaults(func=cmd_edit)
    h = nls.add_parser("hide", help="retire a newsletter (its readers keep their subscription) or bring it back")
    h.add_argument("newsletter", metavar="SLUG", help="its slug (or id)")
    h.add_argument("--show", action="store_true", help="bring a hidden newsletter back")
    h.set_defaults(func=cmd_hide)
