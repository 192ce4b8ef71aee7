"""Article HTML enters an email only through here.

Feeds are untrusted: nh3 (ammonia) keeps a handful of text tags and https links,
then every text node gets the same LTR-run treatment as the rest of the email.
"""

from __future__ import annotations

import html
import re

import nh3
from markupsafe import Markup

from service.rendering.bidi import wrap_ltr

ALLOWED_TAGS = {"p", "br", "strong", "em", "b", "i", "ul", "ol", "li", "blockquote", "a"}
ALLOWED_ATTRIBUTES = {"a": {"href"}}
_TAG = re.compile(r"(<[^>]*>)")


def article_html(value: object) -> Markup:
    """Sanitised, RTL-safe HTML for an article excerpt (the input may be hostile)."""
    if value is None:
        return Markup("")
    cleaned = nh3.clean(
        str(value),
        tags=ALLOWED_TAGS,
        attributes=ALLOWED_ATTRIBUTES,
        url_schemes={"https"},
        link_rel="noopener",
        strip_comments=True,
    )
    # nh3's output is well formed with every `<` in text escaped, so splitting on
    # tags separates markup from text safely.
    parts = _TAG.split(cleaned)
    unwrapping = False
    for i, part in enumerate(parts):
        if i % 2 == 0:  # even indexes are text between tags
            if part:
                parts[i] = str(wrap_ltr(html.unescape(part)))
        elif part.startswith("<a ") and " href=" not in part:
            # nh3 dropped an unsafe href (javascript:, http:): keep the words, lose the
            # dead link.  Anchors never nest, so the next </a> closes this one.
            parts[i] = ""
            unwrapping = True
        elif part == "</a>" and unwrapping:
            parts[i] = ""
            unwrapping = False
    return Markup("".join(parts))
