"""Delivery: the ledger decides who gets an edition and what became of each message.

    planner.plan()        audience frozen by one INSERT … SELECT; each variant rendered once
    planner.plan_chunk()  the same, one range of subscriber ids per transaction: the plan
                          task dispatches each chunk's batches as soon as it commits, so an
                          alert's first messages leave before its whole audience is written
    fanout.dispatch()     id-range batch tasks onto the edition's queue (alerts | digests;
                          alerts in batches of at most 50, so every alert worker starts at once)
    batch.send_batch()    claim → re-check reader and edition → compose → SMTP → record,
                          one commit per message, over smtp.connection() (one per process;
                          alert workers open it, and import and warm up, when they start)
    verdicts.judge()      what each SMTP reply means for the ledger
    ratelimit.limiter()   GCRA budgets in Redis (global, alerts, per domain)
    sweeper.sweep()       expired leases, lost batches, old retries, finished editions;
                          stalled_drafts(): drafts and half-planned editions to plan again
    control.*             pause / resume / cancel / resend_unknown
    progress.progress()   counts, rate and ETA from the ledger

Ledger states: queued → claimed → sent | retry | failed | suppressed | skipped |
cancelled | unknown.  `unknown` is RFC 1047's case — the final "." of DATA went out and
no reply came back — and is never re-sent automatically (see smtp.py).
"""
