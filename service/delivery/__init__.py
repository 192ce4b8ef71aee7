"""Delivery: the ledger decides who gets an edition and what became of each message.

    planner.plan()        audience frozen by one INSERT … SELECT; each variant rendered once
    fanout.dispatch()     id-range batch tasks onto the edition's queue (alerts | digests)
    batch.send_batch()    claim → re-check reader and edition → compose → SMTP → record,
                          one commit per message, over smtp.connection() (one per process)
    verdicts.judge()      what each SMTP reply means for the ledger
    ratelimit.limiter()   GCRA budgets in Redis (global, alerts, per domain)
    sweeper.sweep()       expired leases, lost batches, old retries, finished editions
    control.*             pause / resume / cancel / resend_unknown
    progress.progress()   counts, rate and ETA from the ledger

Ledger states: queued → claimed → sent | retry | failed | suppressed | skipped |
cancelled | unknown.  `unknown` is RFC 1047's case — the final "." of DATA went out and
no reply came back — and is never re-sent automatically (see smtp.py).
"""
