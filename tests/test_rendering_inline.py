"""premailer, configured so that it does no harm (docs/email-rules.md)."""

from __future__ import annotations

import logging

from service.rendering.inline import inline_css

PAGE = """<!DOCTYPE html>
<html lang="ar" dir="rtl"><head><meta charset="utf-8">
<link rel="stylesheet" href="{css_url}">
<!--[if mso]><style>td {{ font-family: Tahoma !important; }}</style><![endif]-->
<style>
.cell {{ color: #ffffff; background-color: #000000; text-align: right; vertical-align: top; width: 300px; }}
.bogus {{ colr: #123456; -webkit-nonsense: 1; }}
@media (max-width: 480px) {{ .cell {{ width: 100%; }} }}
</style>
<style data-premailer="ignore">@media (prefers-color-scheme: dark) {{ .cell {{ color: #eeeeee !important; }} }}</style>
</head><body><table role="presentation"><tr><td class="cell bogus">
<a href="https://news.example/عربي-دولي/خبر?q=غزة&amp;p=1">خبر</a>
<!--[if mso]><table role="presentation"><tr><td width="264"><![endif]-->
<img src="https://news.example/صور/1.jpg" alt="صورة" width="264">
<!--[if mso]></td></tr></table><![endif]-->
</td></tr></table></body></html>"""


def test_inlining_does_no_harm(feed_server, caplog):
    css_url = feed_server.url("/evil.css")
    with caplog.at_level(logging.DEBUG):
        out = inline_css(PAGE.format(css_url=css_url))
    cell = out[out.index('<td class="cell bogus"') : out.index(">", out.index('<td class="cell bogus"'))]
    # inlined, colours as written
    assert "color:#ffffff" in cell and "background-color:#000000" in cell
    # no invented attributes
    assert "align=" not in cell and "bgcolor=" not in cell and "valign=" not in cell and "width=" not in cell
    # Arabic URLs left as written, not percent-encoded
    assert 'href="https://news.example/عربي-دولي/خبر?q=غزة&amp;p=1"' in out
    assert 'src="https://news.example/صور/1.jpg"' in out
    # @media and MSO conditional comments kept; the ignored block left verbatim
    assert "@media (max-width: 480px)" in out
    assert "<!--[if mso]><table" in out and "<![endif]-->" in out
    assert "@media (prefers-color-scheme: dark) { .cell { color: #eeeeee !important; } }" in out
    # no network: the stylesheet link was never fetched
    assert feed_server.requests == []
    # cssutils' complaints about the bogus properties do not reach the logs
    assert not [r for r in caplog.records if r.name.startswith("CSSUTILS") or r.name == "cssutils"]
