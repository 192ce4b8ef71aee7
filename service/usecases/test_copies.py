"""An editor's test copy of what readers will get (an alert, a special edition): sent now to
one address, composed like every other message as kind "test" (the List-Id and From name
of the edition's newsletter — the alerts' List-Id when it names none —, DKIM, a VERP
envelope sender naming the editor, `X-Nashra-Test` and the `[تجربة]` subject prefix, no
List-Unsubscribe: it goes to an editor, not to a subscriber)."""

from __future__ import annotations

from service.db import session_factory
from service.delivery.compose import Sender, compose_one, send_composed
from service.delivery.smtp import SmtpError
from service.logs import get_logger, redact
from service.models import audit
from service.rendering.viewmodels import RenderedVariant
from service.subscribers.errors import InvalidInput
from service.subscribers.validation import normalise_email

log = get_logger(__name__)

MSG_BAD_ADDRESS = "لا يمكن إرسال بريد إلى هذا العنوان."
MSG_NOT_TAKEN = "تعذّر إرسال النسخة التجريبية: خادم البريد لم يقبلها. حاول بعد قليل."


def address(to: str, error: type[Exception]) -> str:
    """The test copy's address, normalised; else `error` with the reason (before anything
    is rendered)."""
    try:
        return normalise_email(to)
    except InvalidInput as exc:
        raise error(exc.message) from None


def send(shown, to_addr: str, editor, sender: Sender | None, *, what: str, error: type[Exception]) -> None:
    """Send `shown` (its subject, html and text; its `newsletter`'s headers, if it has one)
    to `to_addr`, audit it as `{what}.test`.  Raises `error` with a reason an editor can act on."""
    try:
        message = compose_one("test", RenderedVariant(subject=shown.subject, html=shown.html, text=shown.text),
                              to_addr=to_addr, editor_id=editor.id, newsletter=getattr(shown, "newsletter", None))
    except ValueError:  # an address no header can carry (a non-ASCII local part)
        raise error(MSG_BAD_ADDRESS) from None
    try:
        send_composed(message, to_addr, sender)
    except (SmtpError, OSError) as exc:
        log.warning(f"{what}_test_failed", editor_id=editor.id, to=redact(to_addr), error=type(exc).__name__)
        raise error(MSG_NOT_TAKEN) from None
    with session_factory().begin() as s:
        audit(s, editor.actor, f"{what}.test", None, to=redact(to_addr))
    log.info(f"{what}_test_sent", editor_id=editor.id, to=redact(to_addr))
