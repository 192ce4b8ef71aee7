"""What is not a reader's click.

What can be told from a request, honestly:

- a HEAD (link checkers, some mail clients' previews): not counted at all;
- a prefetch the client announces (`Sec-Purpose`/`Purpose: prefetch`, `X-Moz: prefetch`,
  `X-Purpose: preview`): counted as `ignored`;
- a user agent that names itself (mail-security scanners that do: Barracuda, Proofpoint,
  Mimecast, Symantec/Broadcom, Trend Micro, Sophos, Forcepoint, FireEye, Cisco, Zscaler,
  Microsoft's BingPreview and Office's link previews; chat apps' link unfurlers; HTTP libraries
  and headless browsers; anything calling itself a bot, crawler, spider or scanner), or
  none at all: `ignored`;
- a click within SCANNER_SECONDS of the message being built that does not look like a
  person's browser (no Accept-Language: every browser sends one, the scanners that pose
  as browsers — Microsoft Safe Links' detonation among them — usually do not): `ignored`.
  A person does not open a mail and follow a link within seconds of its delivery; a
  gateway scanning every link of every message at delivery does.

What cannot be told: a scanner that waits, sends a browser's headers and comes from an
ordinary address (we keep no address, and ship no list of data-centre networks, which
would go stale).  Such clicks are counted; `ignored` shows how much the others amount to.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping

SCANNER_SECONDS = 60

_PREFETCH = re.compile(r"prefetch|prerender|preview", re.IGNORECASE)
_SCANNER_UA = re.compile(
    r"bot\b|bot/|crawl|spider|scan|preview|safelinks|safe links|barracuda|proofpoint|mimecast|symantec|"
    r"broadcom|messagelabs|trend ?micro|sophos|forcepoint|websense|fireeye|trellix|ironport|cisco|zscaler|"
    r"checkpoint|check point|fortinet|fortiguard|paloalto|cloudmark|vade|hornet|spamtitan|mailcontrol|"
    r"bingpreview|microsoft office|ms-office|skypeuripreview|facebookexternalhit|whatsapp/|slack-imgproxy|"
    r"python|curl|wget|go-http-client|okhttp|java/|libwww|httpclient|"
    r"axios|node-fetch|headless|phantomjs|urlscan|virustotal",
    re.IGNORECASE,
)


class Verdict(enum.StrEnum):
    count = "count"  # a reader's click
    ignore = "ignore"  # a scanner's or a prefetch: kept apart as `ignored`
    skip = "skip"  # not a click at all (HEAD): nothing is written


def judge(method: str, headers: Mapping[str, str], sent_at: int | None, now: float) -> Verdict:
    """`headers`: lower-case names (Starlette's Headers are)."""
    if method.upper() != "GET":
        return Verdict.skip
    for name in ("sec-purpose", "purpose", "x-purpose", "x-moz"):
        if _PREFETCH.search(headers.get(name, "")):
            return Verdict.ignore
    agent = headers.get("user-agent", "").strip()
    if not agent or _SCANNER_UA.search(agent):
        return Verdict.ignore
    if sent_at is not None and now - sent_at < SCANNER_SECONDS and not headers.get("accept-language", "").strip():
        return Verdict.ignore
    return Verdict.count
