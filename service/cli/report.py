"""`nashra report EDITION [--csv]`: what one edition did, as the editor's report page
shows it (service/usecases/edition_report.py): a plain table, or CSV on stdout."""

from __future__ import annotations

import sys

from service.usecases import edition_report


def run(edition_id: int, as_csv: bool = False) -> int:
    try:
        r = edition_report.report(edition_id)
    except edition_report.ReportError:
        print(f"error: no edition {edition_id}", file=sys.stderr)
        return 2
    if as_csv:
        sys.stdout.write(edition_report.to_csv(r))
        return 0
    of = f" of {r.newsletter[1]} [{r.newsletter[0]}]" if r.newsletter else ""
    print(f"edition {r.edition_id} ({r.kind}, {r.status}){of}: {r.title}")
    for name, value in (("recipients", r.recipients), ("sent", r.sent), ("delivered", r.delivered),
                        ("bounced (hard)", r.bounced_hard), ("bounced (soft)", r.bounced_soft),
                        ("complaints", r.complaints), ("unsubscribes", r.unsubscribes)):
        print(f"  {name:<16} {value:>8}")
    tracking = "" if r.tracking else "  (CLICK_TRACKING is off)"
    print(f"  {'clicks':<16} {r.clicks:>8}   unique ~{r.unique_clicks}   click-through {r.ctr_text}{tracking}")
    if r.ignored:
        print(f"  {'not counted':<16} {r.ignored:>8}   (link scanners, prefetches)")
    if r.stories:
        print("stories                                                   clicks   unique")
        for line in r.stories:
            print(f"  {line.label[:54]:<54} {line.clicks:>8} {('-' if line.unique is None else line.unique):>8}")
    if r.sections:
        print("sections                                                  clicks   unique")
        for line in r.sections:
            print(f"  {line.label[:54]:<54} {line.clicks:>8} {line.unique:>8}")
    if r.variants:
        print("copies (readers' sections)                                clicks")
        for line in r.variants:
            print(f"  {line.label[:54]:<54} {line.clicks:>8}")
    print("first 24 hours (clicks per hour from the start): " + " ".join(str(n) for n in r.hours))
    return 0
