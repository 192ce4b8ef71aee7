"""Previewing an alert, and sending one test copy, before it goes to everyone.

The preview goes through the same path as the real send: create_alert validates the
input and builds the edition, and the edition code renders it, inside a transaction
that is then rolled back.  So the preview cannot drift from what readers get, and
previewing writes nothing.  Per-recipient links point at the site's front page.
"""

from __future__ import annotations

from dataclasses import dataclass

from service.config import get_settings
from service.db import session_factory
from service.logging import get_logger, redact
from service.models import audit

log = get_logger(__name__)
TEST_SUBJECT_PREFIX = "[تجربة] "


class PreviewError(ValueError):
    """Why the preview (or the test copy) could not be made, for the editor to read."""


@dataclass(frozen=True)
class Preview:
    subject: str
    html: str
    text: str


def preview_alert(values: dict, editor_id: int | None = None) -> Preview:
    from service.editions.alerts import AlertError, create_alert
    from service.editions.variants import render_variant_for
    from service.rendering.personalise import personalise

    settings = get_settings()
    session = session_factory()()
    try:
        try:
            edition = create_alert(
                session,
                editor_id=editor_id,
                article_url=values.get("article_url") or None,
                headline=None if values.get("article_url") else values.get("headline"),
                url=None if values.get("article_url") else values.get("url"),
                summary=values.get("summary") or None,
            )
            variant = render_variant_for(session, edition, "all")
        except (AlertError, ValueError) as exc:
            raise PreviewError(str(exc)) from None
    finally:
        session.rollback()  # a preview leaves no edition behind
        session.close()
    if variant is None:
        raise PreviewError("nothing to render for this alert")
    home = settings.public_url + "/"
    html, text = personalise(variant, unsubscribe_url=home, preferences_url=home)
    return Preview(subject=variant.subject, html=html, text=text)


def send_test_alert(values: dict, to: str, editor) -> Preview:
    """Render the alert as a preview and send it to one address, now, marked as a test."""
    from service.delivery.smtp import SmtpError, close_connection, send_one
    from service.rendering.mime import build_message
    from service.subscribers.errors import InvalidInput
    from service.subscribers.validation import normalise_email

    try:
        address = normalise_email(to)
    except InvalidInput as exc:
        raise PreviewError(exc.message) from None
    preview = preview_alert(values, editor.id)
    settings = get_settings()
    message = build_message(
        subject=TEST_SUBJECT_PREFIX + preview.subject,
        html=preview.html,
        text=preview.text,
        from_addr=settings.mail_from,
        to_addr=address,
    )
    try:
        send_one(address, message)
    except (SmtpError, OSError) as exc:
        log.warning("alert_test_failed", editor_id=editor.id, to=redact(address), error=type(exc).__name__)
        raise PreviewError("تعذّر إرسال النسخة التجريبية: خادم البريد لم يقبلها. حاول بعد قليل.") from None
    finally:
        close_connection()  # the web process keeps no SMTP connection open between tests
    with session_factory().begin() as s:
        audit(s, editor.actor, "alert.test", None, to=redact(address))
    log.info("alert_test_sent", editor_id=editor.id, to=redact(address))
    return preview
