"""`nashra edition compose` (a special edition) and `nashra edition reschedule` (move a
scheduled alert or special edition, or send it now): thin, over usecases.special_editions
and usecases.scheduled."""

from __future__ import annotations

import sys
from pathlib import Path

from service.cli import ask
from service.usecases import scheduled, special_editions
from service.usecases.editions import NoSuchEdition, NotAllowed


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def compose(args) -> int:
    if not args.article:
        return _fail("give the stories with --article URL|ID (repeat it, in order)")
    if not args.title:
        return _fail("give the edition a --title")
    try:
        intro = Path(args.intro_file).read_text(encoding="utf-8") if args.intro_file else ""
    except (OSError, UnicodeDecodeError) as exc:
        return _fail(f"cannot read --intro-file: {exc}")
    sections = [x for x in (args.sections or "").split(",") if x.strip()]
    try:
        send_at = scheduled.parse_send_at(args.send_at)
        comp = special_editions.composition_from(title=args.title, intro=intro, articles=args.article,
                                                 sections=sections, newsletter=getattr(args, "newsletter", None))
        shown = special_editions.preview(comp)
    except (scheduled.ScheduleError, special_editions.SpecialError) as exc:
        return _fail(str(exc))
    print(f"subject: {shown.subject}")
    whose = f"on {shown.newsletter.name} [{shown.newsletter.slug}]" if shown.newsletter else "on the daily digest"
    print(f"{shown.reach} ({shown.audience:,} reader(s) {whose}, confirmed, not suppressed"
          f"{', following ' + ', '.join(sections) if sections else ''})")
    if args.preview:
        out = Path(args.preview)
        out.mkdir(parents=True, exist_ok=True)
        (out / "special-all.html").write_text(shown.html, encoding="utf-8")
        (out / "special-all.txt").write_text(shown.text, encoding="utf-8")
        print(f"preview: {out / 'special-all.html'}  {out / 'special-all.txt'}")
    if args.test_to:
        try:
            special_editions.send_test(comp, args.test_to, _Operator())
        except special_editions.SpecialError as exc:
            return _fail(str(exc))
        print("test copy sent")
    if args.preview or args.test_to:
        if not args.yes:
            return 0  # a look first; send with --yes
    when = f"at {scheduled.local_text(send_at)}" if send_at else "now"
    if not args.yes:
        if not ask.confirmed(f"Send this special edition {when}? {shown.reach}"):
            print("not sent")
            return 1
    try:
        edition_id = special_editions.compose(comp, editor_id=None, actor="cli", send_at=send_at)
    except special_editions.SpecialError as exc:
        return _fail(str(exc))
    if send_at:
        print(f"edition {edition_id}: scheduled for {scheduled.local_text(send_at)}; "
              f"`nashra edition cancel {edition_id}` stops it before then")
    else:
        print(f"edition {edition_id}: special edition queued; follow it with `nashra status {edition_id}`")
    return 0


class _Operator:
    """The console's operator as the test copy's sender: editor 0, an id no editor has, so
    a bounce of the copy (VERP `+e.0`) names nobody."""

    id = 0
    actor = "cli"


def reschedule(args) -> int:
    if args.edition is None:
        return _fail("which edition? `nashra edition reschedule EDITION --send-at 'YYYY-MM-DD HH:MM'` (or --now)")
    if bool(args.send_at) == bool(args.now):
        return _fail("give --send-at 'YYYY-MM-DD HH:MM' (TIMEZONE) or --now")
    try:
        when = scheduled.reschedule(args.edition, None if args.now else args.send_at, actor="cli", role="admin")
    except NoSuchEdition:
        return _fail(f"no edition {args.edition}")
    except (scheduled.ScheduleError, scheduled.NotScheduled, NotAllowed) as exc:
        return _fail(str(exc))
    print(f"edition {args.edition}: " + ("planning now" if args.now else f"scheduled for {scheduled.local_text(when)}"))
    return 0
