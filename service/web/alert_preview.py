"""Previewing an alert, and sending one test copy, before it goes to everyone.

The preview is rendered by service.rendering exactly as the edition will be, with the
per-recipient links filled with harmless placeholders.
"""

from __future__ import annotations


class PreviewError(ValueError):
    """Why the preview (or the test copy) could not be made, for the editor to read."""


def preview_alert(values: dict):
    try:
        from service.rendering import contexts, render  # noqa: F401
    except ImportError:
        raise PreviewError("المعاينة غير متاحة في هذا الإصدار بعد.") from None
    raise PreviewError("المعاينة غير متاحة في هذا الإصدار بعد.")


def send_test_alert(values: dict, to: str, editor) -> None:
    raise PreviewError("الإرسال التجريبي غير متاح في هذا الإصدار بعد.")
