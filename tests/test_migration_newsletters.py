"""Migration 0008 moves every reader's one subscription onto newsletters, losing nothing.

A site on 0007 has readers with one subscription on their own row (frequency daily,
weekly or none; alerts on or off; sections; digest hour and day; quiet hours; a daily
alert cap with today's count).  After 0008 each reader's choices live on one
`subscriptions` row per newsletter (`daily`, `weekly`, `alerts`), and their own row keeps
what is theirs (address, status, tokens, clock, pause, consent).  This proves it on the
two databases Nashra runs on, with a population filled by raw SQL in the 0007 schema —
the models no longer describe it — and the expectations worked out here in Python, not
by running the migration's own SQL again.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from service.migrate import upgrade

BEFORE = "0007_clicks_reader_clocks"
PG_ADMIN_URL = os.environ.get("TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
NOW = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)
TODAY = NOW.date()
ZONES = (None, "Africa/Casablanca", "Europe/London", "Asia/Riyadh")
# What a reader's own row keeps through 0008: it must come out exactly as it went in.
KEPT = ("id", "email", "status", "token_version", "time_zone", "paused_until", "consent_source",
        "consented_at", "confirmed_at", "unsubscribed_at", "confirmation_due_at", "manage_link_at",
        "created_at", "updated_at")


# ------------------------------------------------------------------ the population (0007 words)


def _readers() -> list[dict]:
    """Every combination of digest × alerts × status, each with different choices."""
    readers = []
    combos = itertools.product(("daily", "weekly", "none"), (True, False),
                               ("active", "pending", "unsubscribed"))
    for i, (frequency, alerts, status) in enumerate(combos, start=1):
        created = NOW - dt.timedelta(days=400 - i)
        readers.append({
            "id": i,
            "email": f"qari{i}@example.org",
            "status": status,
            "frequency": frequency,
            "alerts": alerts,
            "sections": ([], [1], [2, 3], [1, 2, 3])[i % 4],
            "digest_hour": (None, 6, 19)[i % 3],
            "digest_weekday": (None, 4)[i % 2] if frequency == "weekly" else None,
            "quiet_start": (None, 22, 23)[i % 3],
            "quiet_end": (None, 7, 6)[i % 3],
            "quiet_mode": ("hold", "drop")[i % 2],
            "alert_cap": (None, 3, 5)[i % 3],
            "alerts_day": TODAY if i % 3 else TODAY - dt.timedelta(days=2),
            "alerts_today": i % 4,
            "time_zone": ZONES[i % len(ZONES)],
            "paused_until": NOW + dt.timedelta(days=3) if i % 7 == 0 else None,
            "consent_source": ("signup-form", "import:2026-11", None)[i % 3],
            "consented_at": created,
            "confirmed_at": created + dt.timedelta(minutes=5) if status != "pending" else None,
            "unsubscribed_at": NOW - dt.timedelta(days=2) if status == "unsubscribed" else None,
            "confirmation_due_at": NOW + dt.timedelta(minutes=30) if status == "pending" and i % 2 else None,
            "manage_link_at": NOW - dt.timedelta(hours=i) if i % 5 == 0 else None,
            "token_version": 1 + i % 3,
            "created_at": created,
            "updated_at": created + dt.timedelta(days=1),
        })
    return readers


# (id, kind, frequency, status, newsletter it must name after 0008 — None: none)
EDITIONS = (
    (1, "digest", "daily", "done", "daily"),
    (2, "digest", "weekly", "done", "weekly"),
    (3, "alert", None, "done", "alerts"),
    (4, "special", None, "done", "daily"),
    (5, "correction", None, "done", None),
    (6, "catchup", None, "done", None),
    (7, "digest", "daily", "draft", "daily"),
    (8, "alert", None, "sending", "alerts"),
)


def _datetimes(*names: str) -> list[sa.BindParameter]:
    return [sa.bindparam(name, type_=sa.DateTime(timezone=True)) for name in names]


def _fill(conn: sa.Connection, readers: list[dict]) -> None:
    for i, name in enumerate(("عربي دولي", "اقتصاد", "رياضة"), start=1):
        conn.execute(sa.text("INSERT INTO sections (id, slug, name, position, hidden)"
                             " VALUES (:id, :slug, :name, :id, :no)"),
                     {"id": i, "slug": f"s{i}", "name": name, "no": False})
    columns = list(readers[0])
    conn.execute(
        sa.text(f"INSERT INTO subscribers ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})")
        .bindparams(sa.bindparam("sections", type_=sa.JSON()), sa.bindparam("alerts_day", type_=sa.Date()),
                    *_datetimes("paused_until", "consented_at", "confirmed_at", "unsubscribed_at",
                                "confirmation_due_at", "manage_link_at", "created_at", "updated_at")),
        readers)
    conn.execute(
        sa.text("INSERT INTO editions (id, kind, frequency, status, title, params, created_at, recipients)"
                " VALUES (:id, :kind, :frequency, :status, :title, :params, :created_at, :recipients)")
        .bindparams(sa.bindparam("params", type_=sa.JSON()), *_datetimes("created_at")),
        [{"id": e[0], "kind": e[1], "frequency": e[2], "status": e[3], "title": f"نشرة {e[0]}", "params": {},
          "created_at": NOW - dt.timedelta(days=10 - e[0]), "recipients": 2} for e in EDITIONS])
    # Each edition went to the first two readers: the ledger must come through whole.
    conn.execute(
        sa.text("INSERT INTO deliveries (edition_id, subscriber_id, variant, status, attempts, ambiguous)"
                " VALUES (:edition, :reader, 'all', 'sent', 1, 0)"),
        [{"edition": e[0], "reader": r} for e in EDITIONS for r in (1, 2)])


# ------------------------------------------------------------------ what 0008 must make of it


def _expected_subscriptions(readers: list[dict]) -> dict[tuple[int, str], dict]:
    """(reader id, newsletter slug) → the choices that row must carry."""
    rows = {}
    for r in readers:
        if r["frequency"] != "none":
            rows[(r["id"], r["frequency"])] = {
                "sections": r["sections"], "digest_hour": r["digest_hour"], "digest_weekday": r["digest_weekday"],
                "quiet_start": None, "quiet_end": None, "alert_cap": None, "alerts_day": None, "alerts_today": 0}
        if r["alerts"]:
            rows[(r["id"], "alerts")] = {
                "sections": [], "digest_hour": None, "digest_weekday": None,
                "quiet_start": r["quiet_start"], "quiet_end": r["quiet_end"], "quiet_mode": r["quiet_mode"],
                "alert_cap": r["alert_cap"], "alerts_day": r["alerts_day"], "alerts_today": r["alerts_today"]}
    return rows


def _subscriptions(conn: sa.Connection) -> dict[tuple[int, str], dict]:
    query = sa.text(
        "SELECT s.subscriber_id, n.slug, s.sections, s.digest_hour, s.digest_weekday, s.quiet_start,"
        " s.quiet_end, s.quiet_mode, s.alert_cap, s.alerts_day, s.alerts_today"
        " FROM subscriptions s JOIN newsletters n ON n.id = s.newsletter_id"
    ).columns(sections=sa.JSON(), alerts_day=sa.Date())
    found = {}
    for row in conn.execute(query).mappings():
        row = dict(row)
        key = (row.pop("subscriber_id"), row.pop("slug"))
        if key[1] != "alerts":
            row.pop("quiet_mode")  # a digest's row keeps the column's default; it means nothing there
        found[key] = row
    return found


def _kept(conn: sa.Connection) -> list[dict]:
    query = sa.text(f"SELECT {', '.join(KEPT)} FROM subscribers ORDER BY id").columns(
        **{c: sa.DateTime(timezone=True) for c in KEPT if c.endswith(("_at", "_until"))})
    return [_utc(dict(row)) for row in conn.execute(query).mappings()]


def _utc(row: dict) -> dict:
    # SQLite hands datetimes back naive (they are stored in UTC); compare them as UTC.
    return {k: v.replace(tzinfo=dt.UTC) if isinstance(v, dt.datetime) and v.tzinfo is None else v
            for k, v in row.items()}


def _migrate_and_check(url: str) -> None:
    readers = _readers()
    upgrade(url, BEFORE)
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            _fill(conn, readers)
        with engine.connect() as conn:
            before = _kept(conn)
            deliveries = conn.execute(sa.text("SELECT id, edition_id, subscriber_id, status FROM deliveries"
                                              " ORDER BY id")).all()
        assert [r["id"] for r in before] == [r["id"] for r in readers]

        upgrade(url)

        with engine.connect() as conn:
            assert _kept(conn) == before, "a reader's own row changed"
            expected = _expected_subscriptions(readers)
            found = _subscriptions(conn)
            assert sorted(found) == sorted(expected), "readers are on the wrong newsletters"
            for key, choices in expected.items():
                assert found[key] == choices, key
            nothing = {r["id"] for r in readers if r["frequency"] == "none" and not r["alerts"]}
            assert nothing and not {k[0] for k in found} & nothing
            assert conn.execute(sa.text("SELECT id, edition_id, subscriber_id, status FROM deliveries"
                                        " ORDER BY id")).all() == deliveries, "the ledger changed"
            named = dict(conn.execute(sa.text(
                "SELECT e.id, n.slug FROM editions e LEFT JOIN newsletters n ON n.id = e.newsletter_id")).all())
            assert named == {e[0]: e[4] for e in EDITIONS}
            kinds = dict(conn.execute(sa.text("SELECT slug, kind FROM newsletters")).all())
            assert kinds == {"daily": "digest", "weekly": "digest", "alerts": "alerts"}
    finally:
        engine.dispose()


# ------------------------------------------------------------------ on both databases


@pytest.fixture
def scratch_pg_url() -> Iterator[str]:
    """An empty PostgreSQL database of this test's own (the shared test database is at head)."""
    try:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"PostgreSQL is required under CI=true: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    name = f"nashra_mig_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": name})
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))
        admin.dispose()


def test_postgres_readers_keep_their_choices_on_newsletters(scratch_pg_url):
    _migrate_and_check(scratch_pg_url)


def test_sqlite_readers_keep_their_choices_on_newsletters(tmp_path):
    _migrate_and_check(f"sqlite:///{tmp_path / 'nashra.sqlite3'}")
