"""Task names and queues: the one place that says which work goes on which queue.

Names are what a Celery message carries (and what Flower shows), so they say what the
task does; they never change casually, because a message queued by an older release
must still find its task.
"""

from __future__ import annotations

PLAN_EDITION = "nashra.edition.plan"  # freeze an edition's audience, send its batches
SEND_BATCH = "nashra.delivery.send_batch"  # one id range of an edition's ledger
SWEEP = "nashra.delivery.sweep"  # beat: leases, lost batches, due retries, stalled drafts
POLL_FEEDS = "nashra.ingest.poll_due"  # beat: every feed that is due
MAKE_CORRECTIONS = "nashra.editions.make_corrections"  # major updates readers must hear of
SEND_SCHEDULED_DIGEST = "nashra.digest.send_scheduled"  # the default hour's digest (older releases' beat)
SEND_DUE_DIGESTS = "nashra.digest.send_due"  # beat, every DIGEST_CHECK_SECONDS: each hour's digests, catch-ups
SEND_TRANSACTIONAL = "nashra.mail.send_transactional"  # confirmation, welcome
PURGE_READERS = "nashra.subscribers.purge"  # beat, hourly: unconfirmed and long-unsubscribed readers
RELEASE_HELD_CONFIRMATIONS = "nashra.subscribers.release_held"  # beat, every minute: the budget's trickle
START_SCHEDULED = "nashra.editions.start_scheduled"  # beat, every DIGEST_CHECK_SECONDS: editions whose send_at came
FETCH_BOUNCES = "nashra.inbound.fetch_bounces"  # beat, every BOUNCE_IMAP_SECONDS when BOUNCE_IMAP_URL is set

ALERTS, DIGESTS, INGEST, DEFAULT = "alerts", "digests", "ingest", "default"
QUEUES = (ALERTS, DIGESTS, INGEST, DEFAULT)

# Tasks whose queue does not depend on their arguments.
FIXED_ROUTES = {
    POLL_FEEDS: INGEST,
    MAKE_CORRECTIONS: DIGESTS,
    SEND_SCHEDULED_DIGEST: DIGESTS,
    # Not behind a big digest's batches on the digests queue: the next hour's digest and
    # the catch-ups must not wait for this one to finish.
    SEND_DUE_DIGESTS: DEFAULT,
    # Not on the alerts queue: it only asks for planning, and each edition's planning
    # goes on its own kind's queue (edition_queue), an alert's on the alerts queue.
    START_SCHEDULED: DEFAULT,
    PURGE_READERS: DEFAULT,
    RELEASE_HELD_CONFIRMATIONS: DEFAULT,
    FETCH_BOUNCES: DEFAULT,
    SWEEP: DEFAULT,
    SEND_TRANSACTIONAL: DEFAULT,
}


def edition_queue(kind: str) -> str:
    """Alerts never wait behind digests: their planning and their batches have their own
    queue and their own workers; digests and corrections share the other."""
    return ALERTS if str(getattr(kind, "value", kind)) == "alert" else DIGESTS
