"""flufl.bounce beside Nashra's own reading, on the labelled corpus of real bounces.

Issue 21 asked to judge the library against the hand-written parser.  It is not a
dependency: it says only "permanent" or "temporary" (no status, no words), and calls a
full mailbox, a spam rejection and a refusal of our sender permanent, so applied as the
suppression rule it would suppress readers for failures that are not theirs.  This
script prints, per labelled kind, what it says and what Nashra's reader says, and the
time each takes per message.

    .venv/bin/pip install flufl.bounce   # only for this comparison
    .venv/bin/python bench/bench_bounce_libraries.py
"""

from __future__ import annotations

import csv
import email
import email.policy
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from service.inbound.reports import BadReport, feedback_of, parse_report  # noqa: E402

CORPUS = Path(__file__).resolve().parent.parent / "tests" / "data" / "bounces"
KINDS = ("hard", "soft", "refusal", "failed", "complaint", "none")


def ours(raw: bytes) -> str:
    """The kind Nashra's reading gives a message (parse_report, then feedback_of: the
    bounce server's path without the ledger)."""
    try:
        report = parse_report(raw)
    except BadReport:
        return "refused"
    fb = feedback_of(report, "smtp") if report.kind != "none" else None
    return fb.kind if fb is not None else "none"


def main() -> int:
    try:
        from flufl.bounce import all_failures
    except ImportError:
        print("flufl.bounce is not installed: .venv/bin/pip install flufl.bounce", file=sys.stderr)
        return 2
    manifest = list(csv.DictReader((CORPUS / "manifest.csv").open(encoding="utf-8")))
    total, right, permanent, temporary = Counter(), Counter(), Counter(), Counter()
    t_ours = t_lib = 0.0
    for entry in manifest:
        raw = (CORPUS / entry["file"]).read_bytes()
        kind = entry["kind"]
        total[kind] += 1
        start = time.perf_counter()
        right[kind] += ours(raw) == kind
        t_ours += time.perf_counter() - start
        start = time.perf_counter()
        temp, perm = all_failures(email.message_from_bytes(raw, policy=email.policy.compat32))
        t_lib += time.perf_counter() - start
        permanent[kind] += bool(perm)
        temporary[kind] += bool(temp) and not perm
    print(f"{len(manifest)} labelled bounces ({CORPUS})")
    print(f"{'kind':10} {'n':>4}  {'Nashra right':>12}  {'flufl permanent':>15}  {'flufl temporary':>15}")
    for kind in KINDS:
        print(f"{kind:10} {total[kind]:4}  {right[kind]:12}  {permanent[kind]:15}  {temporary[kind]:15}")
    wrongly = sum(permanent[k] for k in ("soft", "refusal", "failed", "none"))
    print(f"flufl.bounce 'permanent' for messages that must not suppress the reader: {wrongly}")
    n = len(manifest)
    print(f"time per message: Nashra {t_ours / n * 1e3:.2f} ms, flufl.bounce {t_lib / n * 1e3:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
