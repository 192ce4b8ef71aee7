"""Render one email variant: Jinja2, then premailer once, then the text part.

This runs once per edition and audience variant, never per recipient: the result
still holds the `views.UNSUBSCRIBE_URL` / `views.PREFERENCES_URL` placeholders, which
`personalise()` fills in by plain substitution.
"""

from __future__ import annotations

from service.rendering.bidi import rtl_line, rtl_text
from service.rendering.environment import KINDS, html_env, text_env
from service.rendering.inline import inline_css
from service.rendering.viewmodels import RenderedVariant


def _one_line(text: str) -> str:
    # A subject is a header: whatever a headline held, it is one line here.
    return " ".join(text.split())


def render_variant(kind: str, context: dict) -> RenderedVariant:
    if kind not in KINDS:
        raise ValueError(f"unknown email kind {kind!r} (one of {', '.join(KINDS)})")
    if context.get("kind") != kind:
        raise ValueError(f"context was built for {context.get('kind')!r}, not {kind!r}")
    subject = _one_line(text_env().get_template(f"{kind}/subject.txt").render(context))
    if not subject:
        raise ValueError(f"{kind}: the subject rendered empty")
    # The lines a reader sees outside the HTML body carry bidi marks instead of spans
    # (bidi.py says which and why): the Subject, the preheader (the inbox snippet) and
    # every line of the text part.
    subject = rtl_line(subject)
    preheader = rtl_line(_one_line(context.get("preheader", "")))
    html = html_env().get_template(f"{kind}/body.html").render(context, subject=subject, preheader=preheader)
    html = inline_css(html)
    text = rtl_text(text_env().get_template(f"{kind}/body.txt").render(context, subject=subject))
    return RenderedVariant(
        subject=subject,
        html=html,
        text=text,
        preheader=preheader,
        extra={"kind": kind},
    )
