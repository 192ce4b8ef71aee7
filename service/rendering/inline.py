"""CSS inlining with premailer, configured so that it does no harm.

Out of the box premailer fetches stylesheets over the network, shortens #ffffff to
#fff (which some clients then misread), invents `align`/`bgcolor` attributes from CSS
(`align="start"` breaks RTL tables in Outlook), strips the `!important` that dark-mode
rules need, and lets lxml percent-encode Arabic URLs.  Each of those is turned off here.
"""

from __future__ import annotations

import logging
import re

import cssutils
from premailer import Premailer

# cssutils is global state: set once, on import of the one module that inlines.
cssutils.ser.prefs.minimizeColorHash = False
cssutils.log.setLevel(logging.CRITICAL)

_URL_ATTR = re.compile(r'\b(href|src)="([^"]*)"')
_KEEP = "__NASHRA_KEEP_URL_{}__"
_KEPT = re.compile(r"__NASHRA_KEEP_URL_(\d+)__")


def _premailer(html: str) -> Premailer:
    return Premailer(
        html,
        allow_network=False,
        allow_loading_external_files=False,
        strip_important=False,
        keep_style_tags=False,
        disable_basic_attributes=["align", "valign", "bgcolor", "width", "height"],
        align_floating_images=False,
        remove_classes=False,  # dark-mode and mobile rules in <style> still select by class
        disable_validation=True,
        cssutils_logging_level=logging.CRITICAL,
        exclude_pseudoclasses=True,
    )


def inline_css(html: str) -> str:
    """Move the inlinable CSS into style attributes; keep @media and MSO comments.

    lxml's HTML serialiser percent-encodes non-ASCII characters in href/src, so URLs
    are parked behind placeholders while premailer runs and put back as written.
    """
    kept: list[str] = []

    def park(m: re.Match[str]) -> str:
        kept.append(m.group(2))
        return f'{m.group(1)}="{_KEEP.format(len(kept) - 1)}"'

    parked = _URL_ATTR.sub(park, html)
    out = _premailer(parked).transform(pretty_print=False)
    return _KEPT.sub(lambda m: kept[int(m.group(1))], out)
