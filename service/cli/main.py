"""`nashra`: the one command operators and integrators script against (README, Commands)."""

from __future__ import annotations

import argparse
import datetime as dt
import getpass
import os
import socket
import sys
import time
from pathlib import Path

import uvicorn

from service.cli import ask
from service.cli import compose as compose_cli
from service.cli import dkim as dkim_cli
from service.cli import doctor as doctor_cli
from service.cli import importing as import_cli
from service.cli import newsletters as newsletters_cli
from service.cli import report as report_cli
from service.cli import suppressions as suppressions_cli
from service.cli.status import print_status
from service.config import ConfigError, get_settings
from service.demo.run import run_demo
from service.editions.alerts import AlertError
from service.editions.digests import DigestError
from service.inbound.mailbox import MailboxError, fetch_bounces
from service.inbound.smtp_server import BounceServer
from service.jobs import install_dispatcher
from service.jobs.app import configure
from service.logs import get_logger, setup_logging
from service.migrate import upgrade
from service.models import AUDIT_ORIGIN
from service.subscribers.errors import InvalidInput
from service.usecases import (
    digest_preview,
    editions,
    feeds,
    scheduled,
    sections,
    staff,
    subscribers,
)
from service.usecases.alerts import PreviewError, dry_run, send_alert
from service.usecases.digests import start_digest
from service.usecases.ingest import poll_all
from service.web import server as web_server


def _settings(require_secret: bool = True):
    settings = get_settings()
    if require_secret:
        settings.require_production_secret()
    return settings


# ---------------------------------------------------------------- commands


def cmd_demo(args) -> int:
    return run_demo(once=args.once, web_port=args.port, smtp_port=args.smtp_port)


def cmd_db_upgrade(args) -> int:
    settings = _settings(require_secret=False)
    upgrade(settings.database_url)
    print("database is at the latest schema")
    return 0


def cmd_web(args) -> int:
    settings = _settings()
    workers, fewer = web_server.worker_count(args.workers, settings)
    log = get_logger("nashra.web")
    if fewer == "sqlite":
        asked = args.workers or settings.web_workers  # 0: "one per core", not a request for more
        (log.warning if asked else log.info)(
            "web.one_process", asked=asked or web_server.cores(),
            why="SQLite takes one writer at a time: more processes would only wait on its lock")
    log.info("web.start", workers=workers, host=args.host, port=args.port)
    uvicorn.run(
        web_server.APP_FACTORY,
        factory=True,
        host=args.host,
        port=args.port,
        workers=workers,
        log_config=None,
        **web_server.uvicorn_options(settings),  # X-Forwarded-For only from FORWARDED_ALLOW_IPS (default: nobody)
    )
    return 0


def cmd_worker(args) -> int:
    from service.jobs import tasks  # noqa: F401 — the worker's tasks and signals

    settings = _settings()
    app = configure(settings)
    get_logger("nashra.worker").info("worker.start", broker=settings.broker_name, queues=args.queues)
    argv = ["worker", "--queues", args.queues, "--loglevel", settings.log_level]
    if args.concurrency:
        argv += ["--concurrency", str(args.concurrency)]
    if args.pool:
        argv += ["--pool", args.pool]
    if args.hostname:
        argv += ["--hostname", args.hostname]
    app.worker_main(argv)
    return 0


def cmd_beat(args) -> int:
    settings = _settings()
    settings.var_dir.mkdir(parents=True, exist_ok=True)
    app = configure(settings)
    app.start(["beat", "--loglevel", settings.log_level, "--schedule", str(settings.var_dir / "celerybeat-schedule")])
    return 0


def cmd_feeds_add(args) -> int:
    _settings(require_secret=False)
    try:
        feed_id, shown = feeds.add(args.url, args.section, actor="cli")
    except feeds.FeedConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"feed {feed_id}: {shown}")
    return 0


def cmd_feeds_list(args) -> int:
    _settings(require_secret=False)
    rows = feeds.health()
    if not rows:
        print("no feeds yet: add one with `nashra feeds add URL [--section NAME]`")
    for f in rows:
        line = (f"{f.id:>4}  {f.state:<8} {f.url}  section: {f.section or '-'}  articles: {f.articles}  "
                f"last success: {_when(f.last_success_at)}")
        if f.consecutive_failures:
            line += f"  failures in a row: {f.consecutive_failures}, next try {_when(f.next_poll_at)}"
        print(line)
        if f.last_error:
            print(f"      last error ({_when(f.last_error_at)}): {f.last_error}")
    unmapped = sections.overview().unmapped
    if unmapped:
        print("categories the feeds used that no section claims (their articles reach only readers of every "
              "section): " + ", ".join(f"{c.name} ({c.articles})" for c in unmapped))
        print("  file one under a section with `nashra sections map CATEGORY SECTION`")
    return 0


def cmd_feeds_steer(args) -> int:
    _settings(require_secret=False)
    try:
        feed_id, shown, outcome = feeds.steer(args.feed, args.feeds_command, actor="cli")
    except feeds.FeedConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"feed {feed_id} ({shown}): {outcome}")
    return 0


def cmd_sections_list(args) -> int:
    _settings(require_secret=False)
    view = sections.overview()
    if not view.sections:
        print("no sections yet: add them with `nashra sections add NAME [--slug S]` "
              "(an install with none gets the nine built-in ones when its first feed is added)")
    for r in view.sections:
        hidden = "  (hidden: not offered to readers)" if r.hidden else ""
        print(f"{r.position:>3}. {r.name}  [{r.slug}]  readers: {r.readers}  articles: {r.articles}  "
              f"feeds: {r.feeds}{hidden}")
    if view.sections:
        print(f"readers of every section (no list of their own): {view.every_section_readers}")
    if view.unmapped:
        print("categories no section claims: " + ", ".join(f"{c.name} ({c.articles})" for c in view.unmapped)
              + " — `nashra sections map CATEGORY SECTION`")
    return 0


def _sections_command(work) -> int:
    _settings(require_secret=False)
    try:
        message = work()
    except sections.SectionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(message)
    return 0


def cmd_sections_add(args) -> int:
    def work():
        row = sections.add(args.name, args.slug, actor="cli")
        return f"section {row.id}: {row.name} [{row.slug}], last in the site's order"
    return _sections_command(work)


def cmd_sections_rename(args) -> int:
    def work():
        name, slug = sections.rename(args.section, args.new_name, args.slug, actor="cli")
        return f"section renamed: {name} [{slug}]"
    return _sections_command(work)


def cmd_sections_hide(args) -> int:
    hidden = args.sections_command == "hide"

    def work():
        name, changed = sections.hide(args.section, hidden, actor="cli")
        if not changed:
            return f"{name} was already {'hidden' if hidden else 'offered'}"
        return (f"{name} hidden: no longer offered on the signup and preferences forms; readers who chose it "
                "keep it" if hidden else f"{name} is offered to readers again")
    return _sections_command(work)


def cmd_sections_order(args) -> int:
    def work():
        return "the site's order: " + ", ".join(sections.order(args.sections, actor="cli"))
    return _sections_command(work)


def cmd_sections_map(args) -> int:
    def work():
        category, section, moved = sections.map_category(args.category, args.section, actor="cli")
        return f"category {category} → {section}; {moved} article(s) filed under it"
    return _sections_command(work)


def cmd_ingest(args) -> int:
    _settings(require_secret=False)
    reports = poll_all(force=args.force)
    if not reports:
        print("no feeds configured: add one with `nashra feeds add URL` or set FEED_URLS")
        return 1
    failed = 0
    for report in reports:
        print(report.summary())
        failed += bool(report.error)
    return 1 if failed == len(reports) else 0


def cmd_digest_send(args) -> int:
    _settings()
    # --newsletter names any digest newsletter; --frequency the site's own daily or weekly.
    which = args.newsletter or args.frequency or "daily"
    try:
        edition_id = start_digest(which, scheduled=not args.now)
    except DigestError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if edition_id is None:
        print(f"no articles for a {which} digest: nothing sent")
        return 0
    print(f"edition {edition_id}: {which} digest queued; follow it with `nashra status {edition_id}`")
    return 0


def cmd_digest_preview(args) -> int:
    _settings(require_secret=False)
    wanted = [x.strip() for x in (args.sections or "").split(",") if x.strip()] or None
    try:
        result = digest_preview.preview(args.frequency, newsletter=args.newsletter, sections=wanted,
                                        subscriber_id=args.subscriber,
                                        every_section=not wanted and args.subscriber is None,
                                        hour=args.hour, weekday=args.weekday)
    except digest_preview.PreviewRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    slot = result.slot
    print(f"the {result.newsletter} digest of {_when(result.send_at)} (the {slot.clock} slot"
          f"{f' of {digest_preview.WEEKDAYS_EN[slot.weekday]}s' if slot.weekday is not None else ''}"
          f"{'' if result.picked else ', the next one with readers'}): {len(result.articles)} article(s) in its "
          f"window so far; {result.reach} in all ({result.audience:,} reader(s))")
    others = [s for s in result.slots if s != slot]
    if others:
        print("other upcoming slots with readers (--hour H" + (" --weekday D" if result.frequency == "weekly" else "")
              + "): " + "; ".join(s.label_en for s in others))
    if not result.articles:
        print("nothing to preview: no article is in its window yet")
        return 0
    written = digest_preview.write_files(result, Path(args.out), subscriber_id=args.subscriber)
    for v in result.variants:
        who = f"{v.label}{' · alerts on' if v.alerts else ''}"
        if v.empty:
            print(f"- {who}: nothing in these sections — these readers get no digest")
    for v, html, text in written:
        print(f"- {v.label}{' · alerts on' if v.alerts else ''}: {v.readers} ({v.audience:,})")
        print(f"  subject: {v.subject}")
        print(f"  {html}  ({v.html_bytes:,} bytes of HTML; budget {result.budget_bytes:,})")
        print(f"  {text}")
        for a in v.articles:
            print(f"    · [{a.section or '—'}] {a.title}{' (updated)' if a.updated else ''}")
        for a in v.missed:
            print(f"    « already alerted, in «فاتك؟»: {a.title}")
        for a in v.cut:
            print(f"    ✂ left out by the size budget: {a.title}")
    return 0


def cmd_alert_send(args) -> int:
    _settings()
    if args.article and (args.headline or args.link):
        print("error: give --article, or --headline with --link", file=sys.stderr)
        return 2
    if not args.article and not (args.headline and args.link):
        print("error: --headline needs --link (or give --article URL)", file=sys.stderr)
        return 2
    try:  # what readers would get, and how many: nothing is queued yet
        send_at = scheduled.parse_send_at(args.send_at)
        preview = dry_run(editor_id=None, article_url=args.article, headline=args.headline, url=args.link,
                          summary=args.summary, **_to_newsletter(args))
    except (AlertError, PreviewError, scheduled.ScheduleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"subject: {preview.subject}")
    print(f"{preview.reach} ({preview.audience:,} reader(s): alerts on, confirmed, not suppressed)")
    when = f" at {scheduled.local_text(send_at)}" if send_at else ""
    if not args.yes:
        if not ask.confirmed(f"Send this alert{when}? {preview.reach}"):
            print("not sent")
            return 1
    try:
        edition_id = send_alert(editor_id=None, actor="cli", article_url=args.article, headline=args.headline,
                                url=args.link, summary=args.summary, override_quiet_hours=args.override_quiet_hours,
                                send_at=send_at, **_to_newsletter(args))
    except AlertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if send_at:
        print(f"edition {edition_id}: alert scheduled for {scheduled.local_text(send_at)}; "
              f"`nashra edition cancel {edition_id}` stops it before then")
    else:
        print(f"edition {edition_id}: alert queued; follow it with `nashra status {edition_id}`")
    return 0


def _to_newsletter(args) -> dict:
    """`newsletter=SLUG` for the alert's use-case when --newsletter is given (else its default
    alerts newsletter)."""
    return {"newsletter": args.newsletter} if getattr(args, "newsletter", None) else {}


def cmd_editors_add(args) -> int:
    _settings(require_secret=False)
    try:
        row, token = staff.add_editor(args.name, args.role, actor="cli")
    except ValueError as exc:  # a duplicate name, an empty one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"editor {row.id} ({args.role}) created; the token is valid until {_when(row.token_expires_at)} "
          "(`nashra editors rotate` makes a new one). Their API token, shown only once:")
    print(token)
    return 0


def _when(value: dt.datetime | None) -> str:
    """A time as the newsroom reads it: local (TIMEZONE), to the minute."""
    if value is None:
        return "never"
    return value.astimezone(get_settings().tz).strftime("%Y-%m-%d %H:%M")


def cmd_editors_list(args) -> int:
    _settings(require_secret=False)
    rows = staff.list_editors()
    if not rows:
        print("no editors yet: add one with `nashra editors add NAME [--role editor|admin]`")
        return 0
    print(f"{'id':>4}  {'name':<24} {'role':<7} {'state':<8} {'token expires':<17} {'last login':<17}")
    for r in rows:
        print(f"{r.id:>4}  {r.name:<24} {r.role:<7} {r.state:<8} {_when(r.token_expires_at):<17} "
              f"{_when(r.last_login_at):<17}")
    return 0


def cmd_editors_revoke(args) -> int:
    _settings(require_secret=False)
    try:
        row, changed = staff.revoke_editor(args.name, actor="cli")
    except staff.NoSuchEditor as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if changed:
        print(f"editor {row.id} ({row.name}) revoked: their token and page sessions open nothing now")
    else:
        print(f"editor {row.id} ({row.name}) was already revoked")
    return 0


def cmd_editors_rotate(args) -> int:
    _settings(require_secret=False)
    try:
        row, token, reinstated = staff.rotate_token(args.name, actor="cli")
    except staff.NoSuchEditor as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    note = " and reinstated" if reinstated else ""
    print(f"editor {row.id} ({row.name}): new token{note}, valid until {_when(row.token_expires_at)}; "
          "the old one and their page sessions stopped working. Shown only once:")
    print(token)
    return 0


def cmd_audit(args) -> int:
    _settings(require_secret=False)
    rows = staff.audit_entries(limit=args.limit, actor=args.actor, action=args.action)
    if not rows:
        print("the audit log is empty")
        return 0
    for e in reversed(rows):  # oldest first, like a log; the newest at the bottom of the screen
        details = " ".join(f"{k}={v}" for k, v in sorted(e.details.items()))
        who = e.who if e.who == e.actor else f"{e.who} ({e.actor})"
        print(f"{_when(e.at)}  {who:<24} {e.action:<24} {e.target or '-':<16} from {e.origin or '-'}"
              + (f"  {details}" if details else ""))
    return 0


def cmd_status(args) -> int:
    _settings(require_secret=False)
    while True:
        if args.watch:
            os.system("clear" if os.name != "nt" else "cls")  # noqa: S605
        code = print_status(args.edition)
        if not args.watch:
            return code
        time.sleep(args.interval)


def cmd_report(args) -> int:
    _settings(require_secret=False)
    return report_cli.run(args.edition, as_csv=args.csv)


def cmd_edition_control(args) -> int:
    if args.action == "compose":
        _settings()
        return compose_cli.compose(args)
    _settings(require_secret=False)
    if args.action == "reschedule":
        return compose_cli.reschedule(args)
    if args.edition is None:
        print(f"error: which edition? `nashra edition {args.action} EDITION`", file=sys.stderr)
        return 2
    action = args.action.replace("-", "_")
    try:
        result = editions.steer(args.edition, action, "cli", role="admin")  # an operator at the console
    except editions.NoSuchEdition:
        print(f"error: no edition {args.edition}", file=sys.stderr)
        return 2
    except editions.ControlRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if action == "resend_unknown":
        print(f"edition {args.edition}: {result['requeued']} message(s) whose fate was unknown queued again")
    else:
        print(f"edition {args.edition}: {result['status']}")
    return 0


def cmd_subscribers_import(args) -> int:
    _settings()
    return import_cli.run(args.file)  # chunk by chunk, a progress bar on a terminal, the summary


def cmd_subscribers_export(args) -> int:
    _settings(require_secret=False)
    if args.file in (None, "-"):
        subscribers.export_to(sys.stdout)
    else:
        with open(args.file, "w", encoding="utf-8", newline="") as fh:
            subscribers.export_to(fh)
    return 0


def cmd_subscribers_forget(args) -> int:
    _settings(require_secret=False)
    try:
        forgotten = subscribers.forget_address(args.email)
    except InvalidInput as exc:
        print(f"error: {exc.message} (nothing was changed)", file=sys.stderr)
        return 2
    if forgotten is None:
        print("no reader has that address; it is kept as a keyed hash now, so no import adds it")
    else:
        print(f"subscriber {forgotten} forgotten: their row, sends and consent record are deleted; only a keyed "
              "hash of the address is kept, so no import adds it back")
    return 0


def cmd_bounces_serve(args) -> int:
    _settings()  # the VERP signatures need the production SECRET_KEY
    server = BounceServer(args.host, args.port, feedback_addresses=tuple(args.feedback_address or ()))
    try:
        server.start()
    except (OSError, RuntimeError) as exc:  # aiosmtpd wraps a bind error in RuntimeError on some versions
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 2
    print(f"bounce server listening on {args.host}:{args.port}", flush=True)
    server.serve_forever()
    return 0


def cmd_bounces_fetch(args) -> int:
    settings = _settings()  # the VERP signatures need the production SECRET_KEY
    try:
        s = fetch_bounces(settings, limit=args.limit)
    except MailboxError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if s.busy:
        print("another run (beat's or an operator's) is reading the bounce mailbox right now; nothing done")
        return 0
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(s.outcomes.items())) or "none"
    print(f"bounce mailbox {s.folder}: {s.fetched} fetched ({outcomes}), {s.failed} failed "
          f"(left flagged $NashraFailed), {s.moved} moved to {settings.bounce_imap_done_folder}, "
          f"{s.remaining} left for the next run ({s.seconds:.2f} s)")
    if s.stopped:
        print(f"error: stopped early: {s.stopped}; the next run takes up the rest", file=sys.stderr)
    return 1 if s.stopped or s.failed else 0


def _workers(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of processes: {value!r}") from None
    if not 0 <= n <= 64:
        raise argparse.ArgumentTypeError("between 0 (one per core) and 64")
    return n


# ---------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="nashra", description="Nashra (نشرة): Arabic newsletters and breaking-news alerts")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="run the whole pipeline on this machine with embedded defaults")
    d.add_argument("--once", action="store_true", help="exit once the demo digest is in the outbox")
    d.add_argument("--port", type=int, default=8000, help="web port (a free one is chosen if taken)")
    d.add_argument("--smtp-port", type=int, default=1025, help="capture SMTP port (a free one if taken)")
    d.set_defaults(func=cmd_demo)

    db = sub.add_parser("db", help="database schema")
    dbs = db.add_subparsers(dest="db_command", required=True)
    dbs.add_parser("upgrade", help="migrate to the latest schema").set_defaults(func=cmd_db_upgrade)

    w = sub.add_parser("web", help="the web app (signup, editor, API, health, metrics)")
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=8000)
    w.add_argument("--workers", type=_workers, metavar="N",
                   help="processes serving requests (default: WEB_WORKERS; 0 = one per core; SQLite: always 1)")
    w.set_defaults(func=cmd_web)

    wk = sub.add_parser("worker", help="a Celery worker")
    wk.add_argument("--queues", default="alerts,digests,ingest,default")
    wk.add_argument("--concurrency", type=int)
    wk.add_argument("--pool", choices=["prefork", "threads", "solo"])
    wk.add_argument("--hostname")
    wk.set_defaults(func=cmd_worker)

    sub.add_parser("beat", help="the scheduler (ingestion every minute, digests at local time)").set_defaults(func=cmd_beat)

    f = sub.add_parser("feeds", help="the site's feeds")
    fs = f.add_subparsers(dest="feeds_command", required=True)
    fa = fs.add_parser("add", help="add a feed (RSS, Atom or JSON Feed)")
    fa.add_argument("url")
    fa.add_argument("--section", help="section slug for items without a category")
    fa.set_defaults(func=cmd_feeds_add)
    fs.add_parser("list", help="every feed with its health").set_defaults(func=cmd_feeds_list)
    for action, what in (("pause", "stop polling a feed (its articles stay)"), ("resume", "poll a paused feed again"),
                         ("remove", "delete a feed (its articles stay)")):
        fp = fs.add_parser(action, help=what)
        fp.add_argument("feed", help="the feed's id or URL (see `nashra feeds list`)")
        fp.set_defaults(func=cmd_feeds_steer)

    sc = sub.add_parser("sections", help="the site's sections")
    scs = sc.add_subparsers(dest="sections_command", required=True)
    scs.add_parser("list", help="every section: order, slug, readers, articles; unmapped categories").set_defaults(
        func=cmd_sections_list)
    sa_ = scs.add_parser("add", help="add a section (last in the site's order)")
    sa_.add_argument("name")
    sa_.add_argument("--slug", help="its stable identifier (a-z, 0-9, -); made from the name if not given")
    sa_.set_defaults(func=cmd_sections_add)
    sr = scs.add_parser("rename", help="rename a section (readers' choices follow)")
    sr.add_argument("section", help="its slug or name")
    sr.add_argument("new_name")
    sr.add_argument("--slug", help="a new slug too")
    sr.set_defaults(func=cmd_sections_rename)
    for action, what in (("hide", "stop offering a section to readers (those who chose it keep it)"),
                         ("unhide", "offer a hidden section again")):
        sh = scs.add_parser(action, help=what)
        sh.add_argument("section", help="its slug or name")
        sh.set_defaults(func=cmd_sections_hide)
    so = scs.add_parser("order", help="put these sections first, in this order (the rest follow as they were)")
    so.add_argument("sections", nargs="+", metavar="SECTION")
    so.set_defaults(func=cmd_sections_order)
    sm = scs.add_parser("map", help="file a feed's category under a section (and its articles with it)")
    sm.add_argument("category")
    sm.add_argument("section")
    sm.set_defaults(func=cmd_sections_map)

    ing = sub.add_parser("ingest", help="poll every feed now and report what was found")
    ing.add_argument("--force", action="store_true", help="re-read feeds in full, ignoring ETag/Last-Modified")
    ing.set_defaults(func=cmd_ingest)

    dg = sub.add_parser("digest", help="digests")
    dgs = dg.add_subparsers(dest="digest_command", required=True)
    ds = dgs.add_parser("send", help="send the digest")
    ds.add_argument("--frequency", choices=["daily", "weekly"], help="the site's own daily (default) or weekly digest")
    ds.add_argument("--newsletter", metavar="SLUG", help="any digest newsletter (`nashra newsletters list`)")
    ds.add_argument("--now", action="store_true", help="send a new edition now, even if today's was sent")
    ds.set_defaults(func=cmd_digest_send)
    dp = dgs.add_parser("preview", help="write the next digest's HTML and text as a reader would get it (opens nothing)")
    dp.add_argument("--frequency", choices=["daily", "weekly"],
                    help="default daily, or the subscriber's own with --subscriber")
    dp.add_argument("--newsletter", metavar="SLUG", help="any digest newsletter, instead of --frequency")
    who = dp.add_mutually_exclusive_group()
    who.add_argument("--sections", metavar="A,B", help="the copy of a reader of these sections (names or slugs, in order)")
    who.add_argument("--subscriber", type=int, metavar="ID", help="the copy this subscriber would get")
    dp.add_argument("--hour", metavar="H", help="the slot of readers who chose this hour (one of DIGEST_HOURS); "
                    "default: the next slot that has readers (with --subscriber: theirs)")
    dp.add_argument("--weekday", metavar="D", help="weekly: the slot of readers who chose this day (0 = Monday … "
                    "6 = Sunday, or its name)")
    dp.add_argument("--out", metavar="DIR", default=".", help="where to write the files (default: here)")
    dp.set_defaults(func=cmd_digest_preview)

    al = sub.add_parser("alert", help="breaking-news alerts")
    als = al.add_subparsers(dest="alert_command", required=True)
    a = als.add_parser("send", help="send a breaking-news alert")
    a.add_argument("--article", metavar="URL", help="an ingested article's URL")
    a.add_argument("--headline", metavar="TEXT")
    a.add_argument("--link", metavar="URL")
    a.add_argument("--summary", metavar="TEXT")
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    a.add_argument("--override-quiet-hours", action="store_true",
                   help="readers in their quiet hours get it now too (written to the audit log)")
    a.add_argument("--send-at", metavar="'YYYY-MM-DD HH:MM'", help="send it then, on TIMEZONE's clock (or ISO 8601 "
                   "with an offset), within 30 days; `nashra edition cancel ID` stops it before then")
    a.add_argument("--newsletter", metavar="SLUG", help="the alerts newsletter whose readers get it "
                   "(default: `alerts`; see `nashra newsletters list`)")
    a.set_defaults(func=cmd_alert_send)

    ed = sub.add_parser("editors", help="editors and their API tokens")
    eds = ed.add_subparsers(dest="editors_command", required=True)
    ea = eds.add_parser("add", help="add an editor; prints their token once")
    ea.add_argument("name")
    ea.add_argument("--role", choices=["editor", "admin"], default="editor")
    ea.set_defaults(func=cmd_editors_add)
    eds.add_parser("list", help="every editor: role, state, token expiry, last login").set_defaults(
        func=cmd_editors_list)
    er = eds.add_parser("revoke", help="stop an editor's token and page sessions now")
    er.add_argument("name")
    er.set_defaults(func=cmd_editors_revoke)
    eo = eds.add_parser("rotate", help="give an editor a new token (printed once); the old one stops working")
    eo.add_argument("name")
    eo.set_defaults(func=cmd_editors_rotate)

    au = sub.add_parser("audit", help="who did what, when, from where (the audit log, newest last)")
    au.add_argument("--limit", type=int, default=50, help="how many entries (default 50, at most 1000)")
    au.add_argument("--actor", help="only this actor (editor:3, cli, system)")
    au.add_argument("--action", help="only actions starting with this (alert, editor, section …)")
    au.set_defaults(func=cmd_audit)

    st = sub.add_parser("status", help="editions' progress, read from the ledger")
    st.add_argument("edition", nargs="?", type=int)
    st.add_argument("--watch", action="store_true")
    st.add_argument("--interval", type=float, default=2.0)
    st.set_defaults(func=cmd_status)

    rp = sub.add_parser("report", help="what an edition did: delivered, bounces, complaints, unsubscribes, clicks")
    rp.add_argument("edition", type=int)
    rp.add_argument("--csv", action="store_true", help="CSV on stdout instead of a table")
    rp.set_defaults(func=cmd_report)

    ec = sub.add_parser("edition", help="pause, resume or cancel an edition; re-send its unknown messages; "
                        "compose a special edition; move a scheduled one")
    ec.add_argument("action", choices=["pause", "resume", "cancel", "resend-unknown", "compose", "reschedule"])
    ec.add_argument("edition", type=int, nargs="?")
    ec.add_argument("--article", action="append", metavar="URL|ID",
                    help="compose: a story (an ingested article's URL or id); repeat it, in the edition's order")
    ec.add_argument("--title", metavar="TEXT", help="compose: the edition's title (its subject)")
    ec.add_argument("--intro-file", metavar="FILE", help="compose: the introduction, plain UTF-8 text; "
                    "a blank line starts a paragraph")
    ec.add_argument("--sections", metavar="A,B", help="compose: only readers who follow one of these sections "
                    "(names or slugs; readers of every section too)")
    ec.add_argument("--newsletter", metavar="SLUG", help="compose: the digest newsletter whose readers get it "
                    "(default: daily; see `nashra newsletters list`)")
    ec.add_argument("--send-at", metavar="'YYYY-MM-DD HH:MM'", help="compose, reschedule: when, on TIMEZONE's "
                    "clock (or ISO 8601 with an offset); default: now")
    ec.add_argument("--now", action="store_true", help="reschedule: send it now")
    ec.add_argument("--preview", metavar="DIR", help="compose: write its HTML and text there (send only with --yes)")
    ec.add_argument("--test-to", metavar="EMAIL", help="compose: send a test copy there (send only with --yes)")
    ec.add_argument("--yes", action="store_true", help="compose: do not ask for confirmation")
    ec.set_defaults(func=cmd_edition_control)

    sb = sub.add_parser("subscribers", help="import and export subscribers (CSV)")
    sbs = sb.add_subparsers(dest="subscribers_command", required=True)
    si = sbs.add_parser("import", help="import FILE.csv")
    si.add_argument("file")
    si.set_defaults(func=cmd_subscribers_import)
    se = sbs.add_parser("export", help="export to FILE.csv (or stdout)")
    se.add_argument("file", nargs="?")
    se.set_defaults(func=cmd_subscribers_export)
    sf = sbs.add_parser("forget", help="delete a reader and all their data; keep only a keyed hash of the address")
    sf.add_argument("email")
    sf.set_defaults(func=cmd_subscribers_forget)
    suppressions_cli.register(sub)  # nashra suppressions list|lift (service/cli/suppressions.py)
    newsletters_cli.register(sub)  # nashra newsletters list|add|edit|hide (service/cli/newsletters.py)

    bo = sub.add_parser("bounces", help="bounces (DSN) and complaints (ARF) that come back by mail")
    bos = bo.add_subparsers(dest="bounces_command", required=True)
    bs = bos.add_parser("serve", help="the inbound SMTP server for the VERP bounce addresses")
    bs.add_argument("--host", default="127.0.0.1")
    bs.add_argument("--port", type=int, default=2525)
    bs.add_argument("--feedback-address", action="append", metavar="ADDR",
                    help="also accept complaint reports (ARF) sent to this address (repeatable)")
    bs.set_defaults(func=cmd_bounces_serve)
    bf = bos.add_parser("fetch", help="read the bounce mailbox of BOUNCE_IMAP_URL (IMAP) once; "
                        "exit 1 when a message failed, 2 when the mailbox cannot be read")
    bf.add_argument("--limit", type=int, default=500, help="at most this many messages (default 500)")
    bf.set_defaults(func=cmd_bounces_fetch)
    dkim_cli.register(sub)  # nashra dkim keygen (service/cli/dkim.py)
    doctor_cli.register(sub)  # nashra doctor (service/cli/doctor.py)
    return p


def _operator() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no login name (a container's uid without a passwd entry)
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    return f"{user}@{socket.gethostname()}"


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:

        get_settings()
        setup_logging()
        AUDIT_ORIGIN.set(f"cli {_operator()}")  # the audit log says from where
        install_dispatcher()  # whatever a command asks for later goes out as Celery messages
        code = args.func(args)
    except ConfigError as exc:
        if getattr(args, "on_config_error", None):  # nashra doctor: a finding, not a stop
            code = args.on_config_error(exc)
        else:
            print(f"nashra: {exc}", file=sys.stderr)
            code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
