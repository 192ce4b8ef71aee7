"""`nashra`: the one command operators and integrators script against (README, Commands)."""

from __future__ import annotations

import argparse
import os
import sys
import time

import uvicorn

from service.articles.feeds import FeedConfigError, add_feed
from service.articles.sections import ensure_sections
from service.cli.status import print_status
from service.config import ConfigError, get_settings
from service.db import session_scope
from service.delivery.bounce_server import BounceServer
from service.demo.run import run_demo
from service.editions.alerts import AlertError
from service.jobs import install_dispatcher
from service.jobs.app import configure
from service.logs import get_logger, setup_logging
from service.migrate import upgrade
from service.staff.editors import create_editor
from service.subscribers.csvio import CsvError
from service.usecases import editions, subscribers
from service.usecases.alerts import send_alert
from service.usecases.digests import start_digest
from service.usecases.ingest import poll_all
from service.web.server import uvicorn_options


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
    uvicorn.run(
        "service.web.app:create_app",
        factory=True,
        host=args.host,
        port=args.port,
        log_config=None,
        **uvicorn_options(settings),  # X-Forwarded-For only from FORWARDED_ALLOW_IPS (default: nobody)
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
        with session_scope() as session:
            ensure_sections(session)
            feed = add_feed(session, args.url, section_slug=args.section)
            print(f"feed {feed.id}: {feed.url}")
    except FeedConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


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
    edition_id = start_digest(args.frequency, scheduled=not args.now)
    if edition_id is None:
        print(f"no articles for a {args.frequency} digest: nothing sent")
        return 0
    print(f"edition {edition_id}: {args.frequency} digest queued; follow it with `nashra status {edition_id}`")
    return 0


def cmd_alert_send(args) -> int:
    _settings()
    if args.article and (args.headline or args.link):
        print("error: give --article, or --headline with --link", file=sys.stderr)
        return 2
    if not args.article and not (args.headline and args.link):
        print("error: --headline needs --link (or give --article URL)", file=sys.stderr)
        return 2
    if not args.yes:
        what = args.article or args.headline
        answer = input(f"Send a breaking-news alert to every alert subscriber: {what!r}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes", "نعم"):
            print("not sent")
            return 1
    try:
        edition_id = send_alert(editor_id=None, actor="cli", article_url=args.article, headline=args.headline,
                                url=args.link, summary=args.summary)
    except AlertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"edition {edition_id}: alert queued; follow it with `nashra status {edition_id}`")
    return 0


def cmd_editors_add(args) -> int:
    _settings(require_secret=False)
    try:
        with session_scope() as session:
            editor, token = create_editor(session, args.name, args.role)
            editor_id = editor.id
    except ValueError as exc:  # a duplicate name, an empty one
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"editor {editor_id} ({args.role}) created. Their API token, shown only once:")
    print(token)
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


def cmd_edition_control(args) -> int:
    _settings(require_secret=False)
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
    try:
        report = subscribers.import_file(args.file)
    except (CsvError, OSError, UnicodeDecodeError) as exc:
        print(f"error: {args.file}: {exc} (nothing was imported)", file=sys.stderr)
        return 2
    print(report.summary())  # counts, then each skipped row by line
    return 0


def cmd_subscribers_export(args) -> int:
    _settings(require_secret=False)
    if args.file in (None, "-"):
        subscribers.export_to(sys.stdout)
    else:
        with open(args.file, "w", encoding="utf-8", newline="") as fh:
            subscribers.export_to(fh)
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

    ing = sub.add_parser("ingest", help="poll every feed now and report what was found")
    ing.add_argument("--force", action="store_true", help="re-read feeds in full, ignoring ETag/Last-Modified")
    ing.set_defaults(func=cmd_ingest)

    dg = sub.add_parser("digest", help="digests")
    dgs = dg.add_subparsers(dest="digest_command", required=True)
    ds = dgs.add_parser("send", help="send the digest")
    ds.add_argument("--frequency", choices=["daily", "weekly"], default="daily")
    ds.add_argument("--now", action="store_true", help="send a new edition now, even if today's was sent")
    ds.set_defaults(func=cmd_digest_send)

    al = sub.add_parser("alert", help="breaking-news alerts")
    als = al.add_subparsers(dest="alert_command", required=True)
    a = als.add_parser("send", help="send a breaking-news alert")
    a.add_argument("--article", metavar="URL", help="an ingested article's URL")
    a.add_argument("--headline", metavar="TEXT")
    a.add_argument("--link", metavar="URL")
    a.add_argument("--summary", metavar="TEXT")
    a.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    a.set_defaults(func=cmd_alert_send)

    ed = sub.add_parser("editors", help="editors and their API tokens")
    eds = ed.add_subparsers(dest="editors_command", required=True)
    ea = eds.add_parser("add", help="add an editor; prints their token once")
    ea.add_argument("name")
    ea.add_argument("--role", choices=["editor", "admin"], default="editor")
    ea.set_defaults(func=cmd_editors_add)

    st = sub.add_parser("status", help="editions' progress, read from the ledger")
    st.add_argument("edition", nargs="?", type=int)
    st.add_argument("--watch", action="store_true")
    st.add_argument("--interval", type=float, default=2.0)
    st.set_defaults(func=cmd_status)

    ec = sub.add_parser("edition", help="pause, resume or cancel an edition; re-send its unknown messages")
    ec.add_argument("action", choices=["pause", "resume", "cancel", "resend-unknown"])
    ec.add_argument("edition", type=int)
    ec.set_defaults(func=cmd_edition_control)

    sb = sub.add_parser("subscribers", help="import and export subscribers (CSV)")
    sbs = sb.add_subparsers(dest="subscribers_command", required=True)
    si = sbs.add_parser("import", help="import FILE.csv")
    si.add_argument("file")
    si.set_defaults(func=cmd_subscribers_import)
    se = sbs.add_parser("export", help="export to FILE.csv (or stdout)")
    se.add_argument("file", nargs="?")
    se.set_defaults(func=cmd_subscribers_export)

    bo = sub.add_parser("bounces", help="bounces (DSN) and complaints (ARF) that come back by mail")
    bos = bo.add_subparsers(dest="bounces_command", required=True)
    bs = bos.add_parser("serve", help="the inbound SMTP server for the VERP bounce addresses")
    bs.add_argument("--host", default="127.0.0.1")
    bs.add_argument("--port", type=int, default=2525)
    bs.add_argument("--feedback-address", action="append", metavar="ADDR",
                    help="also accept complaint reports (ARF) sent to this address (repeatable)")
    bs.set_defaults(func=cmd_bounces_serve)
    return p


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    try:

        get_settings()
        setup_logging()
        install_dispatcher()  # whatever a command asks for later goes out as Celery messages
        code = args.func(args)
    except ConfigError as exc:
        print(f"nashra: {exc}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)
