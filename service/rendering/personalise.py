"""Per-recipient fill-in: plain string substitution, no parsing, no rendering."""

from __future__ import annotations

import re

from markupsafe import escape

from service.rendering.viewmodels import PREFERENCES_URL, UNSUBSCRIBE_URL, RenderedVariant

_NOT_IN_A_LINK = re.compile('["<>\r\n \t]')


def check_link(url: str, what: str) -> str:
    # These links are built by our own token code; anything else is a bug upstream,
    # and a quote or a newline would break out of the attribute or the text line.
    if not url.startswith(("https://", "http://")) or _NOT_IN_A_LINK.search(url):
        raise ValueError(f"{what} must be a plain absolute http(s) URL")
    return url


def personalise(variant: RenderedVariant, *, unsubscribe_url: str, preferences_url: str) -> tuple[str, str]:
    """(html, text) for one recipient."""
    unsub = check_link(unsubscribe_url, "unsubscribe_url")
    prefs = check_link(preferences_url, "preferences_url")
    html = variant.html.replace(UNSUBSCRIBE_URL, str(escape(unsub))).replace(
        PREFERENCES_URL, str(escape(prefs))
    )
    text = variant.text.replace(UNSUBSCRIBE_URL, unsub).replace(PREFERENCES_URL, prefs)
    return html, text
