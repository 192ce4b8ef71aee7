"""Review fixes: display names that need quoting, and the Gmail clipping budget."""

from __future__ import annotations

import email
import email.policy
from urllib.parse import quote

import pytest
import structlog

from service.config import Settings, get_settings
from service.delivery.compose import compose, prepare
from service.editions import variants
from service.editions.variants import render_variant_for
from service.models import (
    Article,
    ArticleVersion,
    Edition,
    EditionArticle,
    EditionKind,
    Frequency,
    Section,
    VersionKind,
    utcnow,
)
from service.rendering import contexts
from service.rendering.mime import build_message
from service.rendering.render import render_variant
from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL

FROMS = [
    ('"Nashra News, Amman" <news@nashra.example>', "Nashra News, Amman", "news@nashra.example"),
    ('"Nashra: Amman" <news@nashra.example>', "Nashra: Amman", "news@nashra.example"),
    ('"Nashra \\"Daily\\" (Amman)" <news@nashra.example>', 'Nashra "Daily" (Amman)', "news@nashra.example"),
    ("نشرة عمّان، اليومية <news@nashra.example>", "نشرة عمّان، اليومية", "news@nashra.example"),
    ("Nashra News <news@nashra.example>", "Nashra News", "news@nashra.example"),
]


def _check_from(raw: bytes, name: str, addr: str) -> None:
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    header = msg["From"]
    assert not header.defects, header.defects
    assert len(header.groups) == 1 and header.groups[0].display_name is None
    assert len(header.addresses) == 1
    assert header.addresses[0].display_name == name
    assert header.addresses[0].addr_spec == addr


@pytest.mark.parametrize(("mail_from", "name", "addr"), FROMS)
def test_build_message_from_has_exactly_one_mailbox(mail_from, name, addr):
    raw = build_message(subject="خبر", html="<p>x</p>", text="x", from_addr=mail_from, to_addr="r@example.org")
    _check_from(raw, name, addr)


@pytest.mark.parametrize(("mail_from", "name", "addr"), FROMS)
def test_delivery_compose_from_has_exactly_one_mailbox(mail_from, name, addr):
    settings = Settings(mail_from=mail_from)
    html = f'<p>x <a href="{UNSUBSCRIBE_URL}">u</a> <a href="{PREFERENCES_URL}">p</a></p>'
    text = f"x {UNSUBSCRIBE_URL} {PREFERENCES_URL}"
    tpl = prepare(1, "digest", "all", "خبر اليوم", html, text, settings=settings)
    out = compose(tpl, delivery_id=7, subscriber_id=3, token_version=1, to_addr="r@example.org", settings=settings)
    _check_from(out.data, name, addr)


# ------------------------------------------------------------------ Gmail clipping budget


def _long_article(session, n, section, now):
    slug = quote(f"الحكومة-تعلن-عن-خطة-جديدة-لدعم-الاقتصاد-الوطني-والقطاعات-المتضررة-{n}")
    a = Article(
        guid=f"urn:review:{n}",
        url=f"https://news.example/ar/{section.slug}/2024/06/01/{slug}",
        title=f"خبر رقم {n}: " + "الحكومة تعلن عن خطة جديدة لدعم الاقتصاد الوطني والقطاعات المتضررة " * 2,
        summary="ملخص طويل يشرح تفاصيل الخبر وخلفياته وما يعنيه للقراء في المنطقة. " * 6,
        content_hash=f"{n:064d}",
        first_seen_at=now,
        last_major_at=now,
        version=1,
        section_id=section.id,
    )
    session.add(a)
    session.flush()
    session.add(ArticleVersion(article_id=a.id, version=1, kind=VersionKind.new, content_hash="0" * 64,
                               title=a.title, created_at=now))
    return a


def test_an_oversized_digest_is_trimmed_under_the_budget(db_session):
    now = utcnow()
    first = Section(slug="review-first", name="محليات", position=1)
    second = Section(slug="review-second", name="اقتصاد", position=2)
    db_session.add_all([first, second])
    db_session.flush()
    articles = [_long_article(db_session, n, first if n < 20 else second, now) for n in range(60)]
    edition = Edition(kind=EditionKind.digest, frequency=Frequency.daily, window_start=now, window_end=now)
    db_session.add(edition)
    db_session.flush()
    for pos, a in enumerate(articles):
        db_session.add(EditionArticle(edition_id=edition.id, article_id=a.id, version=1, position=pos))
    db_session.flush()
    db_session.refresh(edition)

    # Untrimmed, this digest would be clipped by Gmail.
    untrimmed = variants._digest_sections(db_session, edition, "all")  # noqa: SLF001
    ctx = contexts.digest_context(contexts.site_view(get_settings()), untrimmed, edition_date=now,
                                  frequency="daily", lead=untrimmed[0].articles[0])
    assert len(render_variant("digest", ctx).html.encode("utf-8")) > 100 * 1024

    with structlog.testing.capture_logs() as logs:
        rendered = render_variant_for(db_session, edition, "all")
    html = rendered.html
    assert len(html.encode("utf-8")) <= 95_000
    assert UNSUBSCRIBE_URL in html  # the footer's unsubscribe link survives
    assert articles[0].title.strip()[:40] in html  # the first section's first article stays
    trims = [e for e in logs if e["event"] == "digest_trimmed_for_size"]
    assert len(trims) == 1
    assert trims[0]["edition_id"] == edition.id and trims[0]["dropped"] > 0
    assert "@" not in str(trims[0])
