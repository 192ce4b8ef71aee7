"""Editors watch an edition go out: the progress table refreshes itself in the browser,
from the ledger, without reloading the page (and so without losing a half-typed alert)."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from service.db import session_scope
from service.models import (
    Delivery,
    DeliveryStatus,
    Edition,
    EditionKind,
    EditionStatus,
    Subscriber,
    SubscriberStatus,
    utcnow,
)
from service.staff.editors import create_editor
from tests.support.browser import log_in_editor


def test_progress_updates_in_place_while_the_editor_types(live_server, page):
    with session_scope() as s:
        _, token = create_editor(s, "ريم", "editor")
        ed = Edition(kind=EditionKind.alert, status=EditionStatus.sending, title="عاجل: تجربة", params={})
        s.add(ed)
        s.flush()
        for i in range(3):
            sub = Subscriber(email=f"live{i}@example.com", status=SubscriberStatus.active)
            s.add(sub)
            s.flush()
            s.add(Delivery(edition_id=ed.id, subscriber_id=sub.id, status=DeliveryStatus.queued))
        edition_id = ed.id

    log_in_editor(page, live_server, "ريم", token)
    row = page.locator("#editions tr", has_text="عاجل: تجربة")
    assert "أُرسلت 0 من 3" in row.inner_text()
    page.fill("input[name=headline]", "عنوان قيد الكتابة")

    # The workers send: the ledger moves, the page is not reloaded.
    with session_scope() as s:
        s.execute(sa.update(Delivery).where(Delivery.edition_id == edition_id).values(status=DeliveryStatus.sent))
        s.execute(sa.update(Edition).where(Edition.id == edition_id).values(status=EditionStatus.done))
    row.filter(has_text="أُرسلت 3 من 3").wait_for(timeout=10_000)
    assert "اكتملت" in row.inner_text()
    assert page.input_value("input[name=headline]") == "عنوان قيد الكتابة"  # the form is untouched


def test_the_fragment_needs_a_logged_in_editor(live_server, page):  # noqa: F811
    resp = page.request.get(f"{live_server}/editor/editions")
    assert resp.status == 401


def _edition_at_one_a_second(s, title: str, left: int, status: EditionStatus) -> int:
    """60 readers sent in the last minute (1 message/s), one long before, `left` still queued."""
    now = utcnow()
    ed = Edition(kind=EditionKind.alert, status=status, title=title, params={})
    s.add(ed)
    s.flush()
    for i in range(61 + left):
        sub = Subscriber(email=f"eta{ed.id}-{i}@example.com", status=SubscriberStatus.active)
        s.add(sub)
        s.flush()
        sent = i < 61
        s.add(Delivery(edition_id=ed.id, subscriber_id=sub.id,
                       status=DeliveryStatus.sent if sent else DeliveryStatus.queued,
                       sent_at=now - dt.timedelta(seconds=5) if sent else None))
    # one long before: the rate is the last minute's, not since the start
    s.execute(sa.update(Delivery).where(Delivery.edition_id == ed.id, Delivery.status == DeliveryStatus.sent)
              .where(Delivery.id == sa.select(sa.func.min(Delivery.id)).where(Delivery.edition_id == ed.id)
                     .scalar_subquery())
              .values(sent_at=now - dt.timedelta(minutes=10)))
    return ed.id


def test_a_sending_edition_shows_the_time_left(live_server, page):
    with session_scope() as s:
        _, token = create_editor(s, "هالة", "editor")
        _edition_at_one_a_second(s, "عاجل: دقائق", 151, EditionStatus.sending)  # 151 left at 1/s
        _edition_at_one_a_second(s, "عاجل: ثوان", 31, EditionStatus.sending)
        _edition_at_one_a_second(s, "عاجل: متوقف", 151, EditionStatus.paused)

    log_in_editor(page, live_server, "هالة", token)
    minutes = page.locator("#editions tr", has_text="عاجل: دقائق").inner_text()
    assert "الوقت المتبقي: ~ 3 دقيقة" in minutes  # 151 s, rounded up to minutes
    assert "الوقت المتبقي: ~ 31 ثانية" in page.locator("#editions tr", has_text="عاجل: ثوان").inner_text()
    assert "الوقت المتبقي" not in page.locator("#editions tr", has_text="عاجل: متوقف").inner_text()
