"""Delivery: the ledger decides who gets an edition and what became of each message.

    planner.plan()        audience frozen by one INSERT … SELECT; each variant rendered once
    planner.plan_chunk()  the same, one range of subscriber ids per transaction: the plan
                          task dispatches each chunk's batches as soon as it commits, so an
                          alert's first messages leave before its whole audience is written
    fanout.dispatch()     id-range batch tasks onto the edition's queue (alerts | digests;
                          alerts in batches sized to the SMTP pool, so every alert worker
                          starts at once)
    batch.send_batch()    claim → re-check readers and edition (a group per query) → compose
                          → SMTP, many at once → record outcomes in groups (a writer thread);
                          a heartbeat renews the leases; the docstring states the duplicate bound
    smtp_pool.lane()      this process's SMTP sessions per lane, within the shared connection
                          cap and over the relays not set aside; smtp.py: one dialogue,
                          pipelined when the server offers it (alert workers open a session,
                          and import and warm up, when they start)
    verdicts.judge()      what each SMTP reply means for the ledger
    throttle.limiter()    rate budgets in Redis (global, alerts, per domain), shared by every thread
    sweeper.sweep()       expired leases, due retries, lost batches, old retries, finished editions;
                          stalled_drafts(): drafts and half-planned editions to plan again
    control.*             pause / resume / cancel / resend_unknown
    progress.progress()   counts, rate and ETA from the ledger
    metrics               latency from the click and outcomes, from every worker process

Ledger states: queued → claimed → sent | retry | failed | suppressed | skipped |
cancelled | unknown.  `unknown` is RFC 1047's case — the final "." of DATA went out and
no reply came back — and is never re-sent automatically (see smtp.py).
"""
