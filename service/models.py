"""The schema.  Data flows one way through these tables:

    feeds → articles → article_versions → editions (+ edition_articles, edition_variants)
          → deliveries (the ledger) → SMTP

Each step writes what the next one reads.  Every change here is an Alembic migration
in `migrations/versions/`.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Date,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

# Deterministic constraint names so migrations are the same on SQLite and PostgreSQL.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(TypeDecorator):
    """Timezone-aware datetimes everywhere; SQLite stores them naive, in UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database; use an aware one")
        value = value.astimezone(dt.UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


# BigInteger ids that still autoincrement on SQLite (which only does so for INTEGER).
BigId = BigInteger().with_variant(Integer, "sqlite")
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def fits_id(model: type, value: int) -> bool:
    """Whether `value` can be the primary key of `model` at all (Integer: 32 bits,
    BigInteger: 64).  An id past that is no row, not a NumericValueOutOfRange."""
    column = model.__table__.c.id
    limit = INT64_MAX if isinstance(column.type, BigInteger) else INT32_MAX
    return isinstance(value, int) and -limit - 1 <= value <= limit


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {dt.datetime: UTCDateTime}


def _enum(cls: type[enum.Enum], name: str) -> Enum:
    # Stored as plain strings with a CHECK: portable and readable in psql.
    return Enum(cls, name=name, native_enum=False, length=20, values_callable=lambda e: [m.value for m in e])


class Frequency(enum.StrEnum):
    daily = "daily"
    weekly = "weekly"
    none = "none"


class SubscriberStatus(enum.StrEnum):
    pending = "pending"  # signed up, not yet confirmed (double opt-in)
    active = "active"
    unsubscribed = "unsubscribed"


class EditionKind(enum.StrEnum):
    digest = "digest"
    alert = "alert"
    correction = "correction"
    # The alerts a reader's quiet hours held, in one short mail when they end
    # («بينما كنت نائماً»: service/editions/catchup.py).
    catchup = "catchup"
    # An edition an editor put together by hand (election night, a year in review):
    # chosen stories in order and an introduction (service/editions/special.py).
    special = "special"


class EditionStatus(enum.StrEnum):
    draft = "draft"  # created, audience not yet frozen
    planned = "planned"  # ledger rows written
    sending = "sending"
    paused = "paused"
    done = "done"
    cancelled = "cancelled"


class DeliveryStatus(enum.StrEnum):
    queued = "queued"  # waiting to be claimed
    claimed = "claimed"  # a worker holds the lease
    sent = "sent"  # the server answered 250 to DATA
    retry = "retry"  # transient failure; next_attempt_at says when
    failed = "failed"  # permanent failure for this recipient
    suppressed = "suppressed"  # on the suppression list when claimed
    skipped = "skipped"  # unsubscribed/ineligible when claimed
    cancelled = "cancelled"  # the edition was cancelled before it went
    unknown = "unknown"  # DATA sent, reply never came (RFC 1047): not re-sent automatically
    held = "held"  # an alert in the reader's quiet hours: it waits for their catch-up mail
    bundled = "bundled"  # a held alert, carried by the reader's catch-up edition instead


class VersionKind(enum.StrEnum):
    new = "new"
    minor = "minor"
    major = "major"


class NewsletterKind(enum.StrEnum):
    digest = "digest"  # the stories of its sections, at each reader's hour (and day)
    alerts = "alerts"  # breaking news, the moment an editor sends it


class EditorRole(enum.StrEnum):
    editor = "editor"
    admin = "admin"


# ---------------------------------------------------------------- articles


class Section(Base):
    __tablename__ = "sections"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    position: Mapped[int] = mapped_column(default=0)
    # Hidden: no longer offered on the signup and preferences forms; readers who chose
    # it keep it, and its articles still go out (service/articles/sections.py).
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class Category(Base):
    """A category name as a feed wrote it, mapped (or not yet) onto a section."""

    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    section_id: Mapped[int | None] = mapped_column(ForeignKey("sections.id", ondelete="SET NULL"))
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Feed(Base):
    __tablename__ = "feeds"
    id: Mapped[int] = mapped_column(primary_key=True)
    url: Mapped[str] = mapped_column(String(2000), unique=True)
    section_id: Mapped[int | None] = mapped_column(ForeignKey("sections.id", ondelete="SET NULL"))
    etag: Mapped[str | None] = mapped_column(String(500))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_polled_at: Mapped[dt.datetime | None]
    last_success_at: Mapped[dt.datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_error_at: Mapped[dt.datetime | None]
    consecutive_failures: Mapped[int] = mapped_column(default=0)
    next_poll_at: Mapped[dt.datetime | None]
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Article(Base):
    """The current state of an article; history lives in article_versions."""

    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    guid: Mapped[str] = mapped_column(String(2000), unique=True)
    feed_id: Mapped[int | None] = mapped_column(ForeignKey("feeds.id", ondelete="SET NULL"))
    url: Mapped[str] = mapped_column(String(2000))
    section_id: Mapped[int | None] = mapped_column(ForeignKey("sections.id", ondelete="SET NULL"))
    category_id: Mapped[int | None] = mapped_column(ForeignKey("categories.id", ondelete="SET NULL"))
    author: Mapped[str | None] = mapped_column(String(300))
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    lead_image_url: Mapped[str | None] = mapped_column(String(2000))
    lead_image_caption: Mapped[str | None] = mapped_column(Text)
    lead_image_alt: Mapped[str | None] = mapped_column(Text)
    read_also: Mapped[list] = mapped_column(JSON, default=list)  # [{"title", "url"}]
    related: Mapped[list] = mapped_column(JSON, default=list)  # [{"title", "url"}]
    published_at: Mapped[dt.datetime | None]
    source_updated_at: Mapped[dt.datetime | None]  # the "updated" time the site shows
    first_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_major_at: Mapped[dt.datetime] = mapped_column(default=utcnow)  # new or major update
    version: Mapped[int] = mapped_column(default=1)
    content_hash: Mapped[str] = mapped_column(String(64))

    section: Mapped[Section | None] = relationship(lazy="joined")
    versions: Mapped[list[ArticleVersion]] = relationship(
        back_populates="article", order_by="ArticleVersion.version", cascade="all, delete-orphan"
    )

    __table_args__ = (Index("ix_articles_last_major_at", "last_major_at"),)


class ArticleVersion(Base):
    __tablename__ = "article_versions"
    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"))
    version: Mapped[int]
    kind: Mapped[VersionKind] = mapped_column(_enum(VersionKind, "version_kind"))
    content_hash: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(Text)
    summary: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[str] = mapped_column(Text, default="")
    lead_image_url: Mapped[str | None] = mapped_column(String(2000))
    change_note: Mapped[str | None] = mapped_column(Text)  # why it was classified so
    source_updated_at: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    article: Mapped[Article] = relationship(back_populates="versions")

    __table_args__ = (
        UniqueConstraint("article_id", "version", name="uq_article_versions_article_version"),
        Index("ix_article_versions_kind_created", "kind", "created_at"),
    )


# ---------------------------------------------------------------- subscribers


class Subscriber(Base):
    __tablename__ = "subscribers"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # stored lower-cased
    status: Mapped[SubscriberStatus] = mapped_column(
        _enum(SubscriberStatus, "subscriber_status"), default=SubscriberStatus.pending
    )
    consent_source: Mapped[str | None] = mapped_column(String(200))
    consented_at: Mapped[dt.datetime | None]
    confirmed_at: Mapped[dt.datetime | None]
    unsubscribed_at: Mapped[dt.datetime | None]
    # Bumped on unsubscribe/resubscribe so that old links stop working.
    token_version: Mapped[int] = mapped_column(default=1)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    paused_until: Mapped[dt.datetime | None]  # nothing is sent before this; then it resumes by itself
    # The reader's own clock (IANA name): digest hours, weekdays and quiet hours are in it.
    # None: the site's TIMEZONE.
    time_zone: Mapped[str | None] = mapped_column(String(64))
    # A confirmation held back by the signup budget (CONFIRM_BUDGET_*): it goes when due.
    confirmation_due_at: Mapped[dt.datetime | None]
    # When «إدارة اشتراكك» (their preferences link, asked for by signing up again) last
    # went: at most one per MANAGE_LINK_MINUTES (subscribers/manage_link.py).
    manage_link_at: Mapped[dt.datetime | None]

    __table_args__ = (
        Index("ix_subscribers_confirmation_due", "confirmation_due_at"),
    )


# ---------------------------------------------------------------- newsletters


class Newsletter(Base):
    """One list a reader can be on and leave on its own: the daily briefing, a Friday
    sports round-up, breaking alerts (service/newsletters/).  Migration 0008 made the
    site's first three — `daily`, `weekly` and `alerts` — from the one subscription there
    was before."""

    __tablename__ = "newsletters"
    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    description: Mapped[str] = mapped_column(Text, default="", server_default="")
    kind: Mapped[NewsletterKind] = mapped_column(_enum(NewsletterKind, "newsletter_kind"))
    # A digest's cadence; None for alerts.
    frequency: Mapped[Frequency | None] = mapped_column(_enum(Frequency, "newsletter_frequency"))
    # Local hour (reader's clock) and weekday a reader who never chose gets it at;
    # None: the site's DIGEST_DAILY_AT hour and DIGEST_WEEKLY_DAY.
    default_hour: Mapped[int | None] = mapped_column(SmallInteger)
    default_weekday: Mapped[int | None] = mapped_column(SmallInteger)  # 0 = Monday
    # Section ids it draws from; empty means every section.
    sections: Mapped[list] = mapped_column(JSON, default=list)
    # The From display name its mail carries (the address stays MAIL_FROM's); None: MAIL_FROM's.
    from_name: Mapped[str | None] = mapped_column(String(128))
    # Its List-Id (RFC 2919) without the brackets; None: `<slug>.` + LIST_ID's domain.
    list_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    offered: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())  # on the signup form
    # Hidden: retired.  Not offered, nothing new is made for it; its readers keep their
    # subscription (and their choices) should it come back.
    hidden: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    position: Mapped[int] = mapped_column(default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Subscription(Base):
    """A reader on one newsletter, with their choices for it.  The row *is* the
    subscription: leaving a newsletter deletes it (one click, RFC 8058), and a message
    of that newsletter still queued finds no row when claimed and is skipped."""

    __tablename__ = "subscriptions"
    newsletter_id: Mapped[int] = mapped_column(ForeignKey("newsletters.id", ondelete="CASCADE"), primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(BigInteger, ForeignKey("subscribers.id", ondelete="CASCADE"),
                                               primary_key=True)
    # Section ids in the reader's order, among the newsletter's; empty means all of them.
    sections: Mapped[list] = mapped_column(JSON, default=list)
    # A digest's hour and weekly day on the reader's clock (service/editions/schedule.py);
    # None: the newsletter's default, so readers who never chose follow it when it changes.
    digest_hour: Mapped[int | None] = mapped_column(SmallInteger)
    digest_weekday: Mapped[int | None] = mapped_column(SmallInteger)  # 0 = Monday
    # Alerts: quiet hours (local, may span midnight) hold them for one catch-up mail
    # ("hold") or drop them ("drop"); a cap per local day (None: none).
    quiet_start: Mapped[int | None] = mapped_column(SmallInteger)
    quiet_end: Mapped[int | None] = mapped_column(SmallInteger)
    quiet_mode: Mapped[str] = mapped_column(String(10), default="hold", server_default="hold")
    alert_cap: Mapped[int | None] = mapped_column(SmallInteger)
    # Alerts of this newsletter mailed on alerts_day (local date), counted as outcomes are written.
    alerts_day: Mapped[dt.date | None] = mapped_column(Date)
    alerts_today: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    newsletter: Mapped[Newsletter] = relationship(lazy="joined")

    __table_args__ = (
        Index("ix_subscriptions_subscriber_id", "subscriber_id"),
        Index("ix_subscriptions_slot", "newsletter_id", "digest_hour", "digest_weekday"),
    )


class Consent(Base):
    """What a reader agreed to, when, and from where: one row at signup (or import) and
    one at confirmation.  Shown to them (preferences, export); gone when they are."""

    __tablename__ = "consents"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(20))  # signup | confirm | import
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str | None] = mapped_column(String(200))  # web:form, web:embed, api, csv …
    ip: Mapped[str | None] = mapped_column(String(64))  # the address, or its network (CONSENT_IP)
    user_agent: Mapped[str | None] = mapped_column(String(500))
    form_url: Mapped[str | None] = mapped_column(String(2000))
    text_version: Mapped[str | None] = mapped_column(String(40))
    text: Mapped[str | None] = mapped_column(Text)  # the consent sentence as shown

    __table_args__ = (Index("ix_consents_subscriber_id", "subscriber_id"),)


class SuppressedHash(Base):
    """An address we keep only as a keyed hash (service/subscribers/privacy.py): a reader
    who asked to be forgotten, or who unsubscribed long ago.  An import never adds it back;
    `reason` says whether their own signup may (forgotten, unsubscribed) or not (a bounce
    or a complaint, kept as it was on the suppression list)."""

    __tablename__ = "suppressed_hashes"
    hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    reason: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Suppression(Base):
    """Addresses we must never mail: hard bounces, complaints, manual blocks."""

    __tablename__ = "suppressions"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    reason: Mapped[str] = mapped_column(String(50))  # hard_bounce | soft_bounce | complaint | manual
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class FeedbackEvent(Base):
    """One bounce, complaint or delivery report that changed what we know of a reader,
    from any source (service/inbound/): what the soft-bounce policy counts, what the
    metrics show, and — through `event_key`, a hash of a provider's own event id — what
    makes the same webhook delivered twice change nothing more.  Ids only, no address."""

    __tablename__ = "feedback_events"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    source: Mapped[str] = mapped_column(String(20))  # smtp | imap | ses | mailgun | postmark | sendgrid | suppressions (a lift)
    kind: Mapped[str] = mapped_column(String(20))  # hard | soft | failed | refusal | complaint | delivered | lifted
    subscriber_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("subscribers.id", ondelete="CASCADE"))
    edition_id: Mapped[int | None] = mapped_column(Integer)
    delivery_id: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str | None] = mapped_column(String(20))  # the enhanced status code, e.g. 5.2.2
    event_key: Mapped[str | None] = mapped_column(String(64), unique=True)

    __table_args__ = (Index("ix_feedback_events_subscriber_kind", "subscriber_id", "kind", "received_at"),)


# ---------------------------------------------------------------- editions


class Edition(Base):
    """One digest or one alert: what it holds, and (through the ledger) who gets it."""

    __tablename__ = "editions"
    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[EditionKind] = mapped_column(_enum(EditionKind, "edition_kind"))
    frequency: Mapped[Frequency | None] = mapped_column(_enum(Frequency, "edition_frequency"))
    status: Mapped[EditionStatus] = mapped_column(
        _enum(EditionStatus, "edition_status"), default=EditionStatus.draft
    )
    title: Mapped[str] = mapped_column(Text, default="")
    # A retried request or a double click maps onto the same edition.
    idempotency_key: Mapped[str | None] = mapped_column(String(200), unique=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)  # headline/link/summary for alerts
    created_by: Mapped[int | None] = mapped_column(ForeignKey("editors.id", ondelete="SET NULL"))
    window_start: Mapped[dt.datetime | None]
    window_end: Mapped[dt.datetime | None]
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    planned_at: Mapped[dt.datetime | None]
    started_at: Mapped[dt.datetime | None]
    finished_at: Mapped[dt.datetime | None]
    pause_reason: Mapped[str | None] = mapped_column(Text)
    recipients: Mapped[int] = mapped_column(default=0)
    # Readers who left through this edition's own unsubscribe links (no row says who).
    unsubscribes: Mapped[int] = mapped_column(default=0, server_default="0")
    # A draft with send_at is scheduled: beat plans it once this (UTC) instant has come
    # (service/editions/scheduled.py); before then it can be cancelled or moved.
    send_at: Mapped[dt.datetime | None]
    # Whose readers get it and whose List-Id, From name and one-click leave it carries;
    # None: a correction (it follows the editions it corrects) or a catch-up.
    newsletter_id: Mapped[int | None] = mapped_column(ForeignKey("newsletters.id", ondelete="SET NULL"))

    articles: Mapped[list[EditionArticle]] = relationship(
        order_by="EditionArticle.position", cascade="all, delete-orphan", lazy="selectin"
    )

    __table_args__ = (
        Index("ix_editions_kind_status", "kind", "status"),
        Index("ix_editions_status_send_at", "status", "send_at"),
    )


class EditionArticle(Base):
    __tablename__ = "edition_articles"
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), primary_key=True)
    version: Mapped[int]  # the article version this edition carried
    position: Mapped[int] = mapped_column(default=0)
    updated: Mapped[bool] = mapped_column(Boolean, default=False)  # a major update since first seen

    article: Mapped[Article] = relationship(lazy="joined")


class EditionVariant(Base):
    """An edition rendered and inlined once per audience variant (e.g. section set).

    html/text hold placeholders that personalisation fills by plain substitution.
    """

    __tablename__ = "edition_variants"
    id: Mapped[int] = mapped_column(primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str] = mapped_column(Text)
    html: Mapped[str] = mapped_column(Text)
    text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    __table_args__ = (UniqueConstraint("edition_id", "variant", name="uq_edition_variants_edition_variant"),)


# ---------------------------------------------------------------- clicks


class EditionLink(Base):
    """A link of one variant of an edition, made once when the variant is rendered: the
    `/r/…` redirect names it, so a click counts for the edition, variant and article."""

    __tablename__ = "edition_links"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(200))
    position: Mapped[int] = mapped_column(SmallInteger)  # order in the mail
    url: Mapped[str] = mapped_column(Text)
    article_id: Mapped[int | None] = mapped_column(ForeignKey("articles.id", ondelete="SET NULL"))
    section_id: Mapped[int | None] = mapped_column(ForeignKey("sections.id", ondelete="SET NULL"))

    __table_args__ = (UniqueConstraint("edition_id", "variant", "position", name="uq_edition_links_position"),)


class ClickCount(Base):
    """Clicks on one link in one hour.  Deliberately nothing about who clicked."""

    __tablename__ = "click_counts"
    link_id: Mapped[int] = mapped_column(BigId, ForeignKey("edition_links.id", ondelete="CASCADE"),
                                         primary_key=True)
    hour: Mapped[dt.datetime] = mapped_column(primary_key=True)  # UTC, truncated to the hour
    clicks: Mapped[int] = mapped_column(default=0)
    ignored: Mapped[int] = mapped_column(default=0, server_default="0")  # scanners, prefetches


class ClickSketch(Base):
    """A HyperLogLog of salted per-edition hashes (unique clicks), kept here when there is
    no Redis.  A sketch cannot be turned back into readers."""

    __tablename__ = "click_sketches"
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"), primary_key=True)
    scope: Mapped[str] = mapped_column(String(80), primary_key=True)  # edition | article:ID | section:ID
    sketch: Mapped[bytes] = mapped_column(LargeBinary)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


# ---------------------------------------------------------------- delivery


class Delivery(Base):
    """The ledger: one row per (edition, subscriber).  It decides, not the broker."""

    __tablename__ = "deliveries"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    edition_id: Mapped[int] = mapped_column(ForeignKey("editions.id", ondelete="CASCADE"))
    subscriber_id: Mapped[int] = mapped_column(ForeignKey("subscribers.id", ondelete="CASCADE"))
    variant: Mapped[str] = mapped_column(String(200), default="all")
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.queued
    )
    attempts: Mapped[int] = mapped_column(default=0)
    lease_until: Mapped[dt.datetime | None]
    claimed_by: Mapped[str | None] = mapped_column(String(200))
    next_attempt_at: Mapped[dt.datetime | None]
    smtp_code: Mapped[int | None]
    smtp_reply: Mapped[str | None] = mapped_column(Text)
    message_id: Mapped[str | None] = mapped_column(String(300))
    sent_at: Mapped[dt.datetime | None]
    updated_at: Mapped[dt.datetime | None]
    # Times the message went once more after its final dot got no answer
    # (SMTP_AMBIGUOUS=resend): each one a possible duplicate for this reader.
    ambiguous: Mapped[int] = mapped_column(SmallInteger, default=0, server_default="0")

    __table_args__ = (
        UniqueConstraint("edition_id", "subscriber_id", name="uq_deliveries_edition_subscriber"),
        Index("ix_deliveries_edition_status", "edition_id", "status"),
        Index("ix_deliveries_status_lease", "status", "lease_until"),
        # A reader's own rows: their export, their catch-up, and deleting them (the FK cascade).
        Index("ix_deliveries_subscriber_id", "subscriber_id"),
    )


# ---------------------------------------------------------------- people and audit


class Editor(Base):
    __tablename__ = "editors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    role: Mapped[EditorRole] = mapped_column(_enum(EditorRole, "editor_role"), default=EditorRole.editor)
    token_hash: Mapped[str] = mapped_column(String(128), unique=True)  # sha256 of the token
    token_expires_at: Mapped[dt.datetime]  # the token opens nothing after this (EDITOR_TOKEN_DAYS)
    active: Mapped[bool] = mapped_column(Boolean, default=True)  # false: revoked
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class EditorSession(Base):
    """An editor's session on the pages (service/staff/sessions.py): made at login,
    deleted at logout, useless after expires_at or a long idle.  The cookie holds a
    random secret; only its sha256 is kept.  The API token never rides in a cookie."""

    __tablename__ = "editor_sessions"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    editor_id: Mapped[int] = mapped_column(ForeignKey("editors.id", ondelete="CASCADE"))
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_seen_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime]

    __table_args__ = (Index("ix_editor_sessions_expires_at", "expires_at"),)


class RateCounter(Base):
    """Fixed-window counters for abuse limits (service/limits.py) when Redis is not
    there to keep them: signups per client, failed logins per client and per name,
    confirmation mails per address.  `key` is a keyed hash, never the address."""

    __tablename__ = "rate_counters"
    bucket: Mapped[str] = mapped_column(String(40), primary_key=True)
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    window: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # epoch seconds // window length
    count: Mapped[int] = mapped_column(default=0)
    expires_at: Mapped[dt.datetime]

    __table_args__ = (Index("ix_rate_counters_expires_at", "expires_at"),)


class AuditLog(Base):
    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    actor: Mapped[str] = mapped_column(String(200))  # "editor:3", "cli", "system", "subscriber:9"
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str | None] = mapped_column(String(200))
    details: Mapped[dict] = mapped_column(JSON, default=dict)
    # From where: "web 203.0.113.7", "api 203.0.113.7", "cli ops@host" (AUDIT_ORIGIN).
    origin: Mapped[str | None] = mapped_column(String(200))

    __table_args__ = (Index("ix_audit_log_at", "at"),)


# Where the current request or command comes from, for the audit log: set once by the
# edge (the web app's middleware per request, `nashra` at start), read by `audit()`, so
# that no call site has to pass it along.
AUDIT_ORIGIN: contextvars.ContextVar[str | None] = contextvars.ContextVar("nashra_audit_origin", default=None)


def audit(session, actor: str, action: str, target: str | None = None, **details) -> None:
    origin = AUDIT_ORIGIN.get()
    session.add(AuditLog(actor=actor, action=action, target=target, details=details,
                         origin=origin[:200] if origin else None))
