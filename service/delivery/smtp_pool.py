"""SMTP sessions per worker process: a pool per lane, so many messages go at once.

A relay is tens of milliseconds away and each message costs round trips, so one
connection sends at most a few dozen messages a second whatever the machine.  Each
worker process therefore keeps, per lane — ``alert``, and ``digest`` (digests and
corrections) — a `Lane`: up to SMTP_CONNECTIONS `SmtpConnection` sessions and as many
sender threads.  A session

* carries one dialogue at a time, never two messages interleaved: a sender thread holds
  it (`checkout` … `checkin`) for its message and for the queued ones it chains behind
  it — with PIPELINING, the next message's MAIL, RCPT and DATA go in the same write as
  the current one's final dot (RFC 2920 §3.1), so each message costs one round trip
  instead of two (`Lane._one`, `SmtpConnection.finish`);
* is kept open across messages and batches, and reopened by `SmtpConnection` after a
  421 or an idle close by the server;
* holds a slot of the cap shared by every worker (`ConnectionCap`: SMTP_MAX_CONNECTIONS
  per relay, SMTP_ALERT_CONNECTIONS of them kept for alerts), renewed while it lives and
  given back when it closes — after SMTP_IDLE_SECONDS unused, when the cap says so, or
  at worker process shutdown (`close_all`);
* talks to the first relay of SMTP_URL that is not set aside (`Relays`): a relay that
  refuses us (auth, TLS, 5.7.x, connection refused) is set aside and the message is
  tried on the next one — nothing was accepted, so nothing goes twice.  Only when every
  relay refuses is the refusal returned (the batch then pauses the edition); a batch
  that starts while every relay is set aside (an operator resumed the edition) tries
  the first relay again rather than giving up unasked.

`Lane.window` bounds the messages of a lane in flight in this process (handed to the
lane and not yet taken back by their batch) to 3 × SMTP_CONNECTIONS (WINDOW_PER_SESSION)
whatever the number of batches running: that is the "in flight" of the duplicate bound
(see batch.py).

Threads, not asyncio: smtplib keeps the stage-by-stage dialogue of smtp.py (RFC 1047's
"unknown", PIPELINING's refusals) in plain code, and a sender thread spends its time
waiting on the network with the GIL released (bench/bench_send_engine.py measures it
beside aiosmtplib; BENCHMARKS.md).
Lanes are per process: a forked child makes its own (threads do not survive a fork).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from service.config import Settings, SmtpTarget, on_reset
from service.delivery import metrics
from service.delivery.connection_cap import ALERT_LANE, ConnectionCap
from service.delivery.relays import Relays, relay_key
from service.delivery.smtp import (
    SmtpConnection,
    SmtpError,
    SmtpTransientError,
    data_payload,
    helo_name,
)
from service.delivery.verdicts import Outcome, Verdict, enhanced_status, scrub
from service.logs import get_logger

log = get_logger(__name__)

ALERT, DIGEST = ALERT_LANE, "digest"
FIRST_SLOT_WAIT = 1.0  # a lane with no session waits this long per try for a slot of the cap
CAP_FULL_BACKOFF = 0.2  # a lane that has sessions asks the cap again after this
PICK_EVERY = 1.0  # seconds a lane keeps Relays.pick()'s answer
# Messages in flight per session: one on the wire, one whose envelope follows it in the
# same write, and one queued for the write after: the batch refills the window only after
# an answer, and the next write follows that answer at once (the follower's 354 comes in
# the same packet as the dot's 250), so with two a session chained every other message.
WINDOW_PER_SESSION = 3
MAX_RESTARTS = 2  # a message the relay drops before its dot is tried again this often
KEEP_EVERY = 0.5  # seconds between the keeper's rounds (idle sessions, slots others want)


def lane_name(kind: str) -> str:
    """Alerts have their own lane (and share of the cap); digests and corrections share one."""
    return ALERT if str(getattr(kind, "value", kind)) == "alert" else DIGEST


class Senders:
    """A lane's sender threads (at most `size`, started as they are needed): each hands
    the items it takes to `run`, one at a time.

    A ThreadPoolExecutor without its futures: a batch gets its answers through a queue of
    its own, so the Future each submit made (a Condition, a lock, a result nobody reads)
    and its bookkeeping were ~8 µs of CPU per message for nothing.  As in the executor,
    a thread that finishes an item waits for the next one, and a new thread starts only
    when none is idle; `shutdown` lets the queued work finish.  A running thread may
    also take the next queued item itself (`take_ready`: the lane chains messages on a
    session).  What `run` raises is logged.
    """

    def __init__(self, size: int, name: str, run: Callable[[object], object]):
        self.size, self.name, self.run = size, name, run
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._shut = False

    def submit(self, item: object) -> None:
        # Under the lock, as the executor does: an item is never queued after the stop
        # marks of a shutdown, nor left without a thread by one.
        with self._lock:
            if self._shut:
                raise RuntimeError(f"{self.name}: no new messages after shutdown")
            self._queue.put(item)
            # An idle count that take_ready() left too high is never the case: a thread
            # that took more than one item still counts itself idle once, so the count
            # can only be low, and then a thread too many starts (never more than size).
            if self._idle.acquire(blocking=False) or len(self._threads) >= self.size:
                return
            thread = threading.Thread(target=self._run, name=f"{self.name}_{len(self._threads)}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def idle(self) -> bool:
        """Nothing queued (a message may still be on a thread)."""
        return self._queue.empty()

    def take_ready(self) -> object | None:
        """The next queued item, if there is one now (for a thread already running one)."""
        try:
            item = self._queue.get_nowait()
        except queue.Empty:
            return None
        if item is None:  # a stop mark: it stays for a thread's own get(); nothing follows it
            self._queue.put(None)
        return item

    def _run(self) -> None:
        get, run = self._queue.get, self.run
        while True:
            item = get()
            if item is None:
                return
            try:
                run(item)
            except BaseException:  # noqa: BLE001 — a sender thread lives on
                log.exception("smtp.pool.sender_failed", pool=self.name)
            del item
            self._idle.release()

    def shutdown(self, wait: bool = False) -> None:
        with self._lock:
            self._shut = True
            threads = list(self._threads)
        for _ in threads:
            self._queue.put(None)  # after the work already queued
        if wait:
            for thread in threads:
                thread.join()


@dataclass(eq=False, kw_only=True)
class Job:
    """One message for a lane's sessions (a batch's `_Message` is one).

    The lane calls `before` on the session, right before the write that carries the
    message's envelope (the rate limiter: `wait=False` asks only for a permission that is
    there now), `still_wanted` while the message waits for a session (it raises to give
    the message up), and `answer` once, with the outcome or what was raised instead.
    """

    sender: str
    recipient: str
    data: bytes  # wire-ready (compose's): CRLF lines, no line starting with "."
    permitted: bool = False  # `before` said yes: it is not asked again
    restarts: int = 0  # times the relay dropped it before its dot (MAX_RESTARTS)

    def before(self, wait: bool) -> bool:
        return True

    def still_wanted(self) -> None:
        return None

    def answer(self, outcome: Outcome | None, error: BaseException | None) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class Session:
    conn: SmtpConnection
    relay: str  # relay_key(target): the cap's and the relays' name for it
    slot: str
    last_used: float = field(default_factory=time.monotonic)
    evict: bool = False  # the cap wants the slot back: close at checkin


class Lane:
    def __init__(self, settings: Settings, name: str, fingerprint: tuple = ()):
        self.name = name
        self.fingerprint = fingerprint
        self.pid = os.getpid()
        self.size = settings.smtp_connections
        self.idle_seconds = settings.smtp_idle_seconds
        self.timeout = settings.smtp_timeout
        self.connect_timeout, self.data_timeout = settings.smtp_connect_timeout, settings.smtp_data_timeout
        self.helo = helo_name(settings)
        self.cap = ConnectionCap(settings)
        self.relays = Relays(settings)
        # Room for messages in flight (see the module doc), shared by the lane's batches.
        self.window = threading.BoundedSemaphore(self.size * WINDOW_PER_SESSION)
        self.executor = Senders(self.size, f"nashra-smtp-{name}", self._carry)
        self._cond = threading.Condition()
        self._free: list[Session] = []  # the most recently used last: reused first
        self._all: set[Session] = set()
        self._opening = 0
        self._cap_full_until = 0.0
        self._picked: SmtpTarget | None = None
        self._picked_until = 0.0
        self._closed = threading.Event()
        self._keeper = threading.Thread(target=self._keep, name=f"nashra-smtp-{name}-keeper", daemon=True)
        self._keeper.start()

    # ------------------------------------------------------------------ sessions

    def checkout(self, wait: float | None = None,
                 still_wanted: Callable[[], object] | None = None) -> Session | None:
        """A session no other message is using (opened lazily, on its first message).

        Blocks until one is free or a slot of the cap is granted; `wait` bounds that
        (None: as long as it takes — the batch's heartbeat keeps its leases meanwhile),
        and `still_wanted` is called while it waits (it raises to give the message up).
        """
        deadline = None if wait is None else time.monotonic() + wait
        preferred = self._preferred()
        preferred_key = relay_key(preferred) if preferred is not None else None
        while True:
            stale, waited = None, False
            with self._cond:
                if self._free:
                    session = self._free.pop()
                    if preferred_key is None or session.relay == preferred_key:
                        return session
                    stale = session  # its relay was set aside, or a preferred one is back
                elif len(self._all) + self._opening < self.size and time.monotonic() >= self._cap_full_until:
                    self._opening += 1
                else:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return None
                    self._cond.wait(0.1 if left is None else min(left, 0.1))
                    waited = True
            if waited:
                if still_wanted is not None:
                    still_wanted()
                continue
            if stale is not None:
                self.discard(stale)
                continue
            session = self._open(preferred)
            if session is not None:
                return session
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _preferred(self) -> SmtpTarget | None:
        """Relays.pick(), asked at most every PICK_EVERY seconds (it may ask Redis): a
        set-aside is seen within that time, and by this lane at once (send() drops the
        cached answer when it sets a relay aside)."""
        now = time.monotonic()
        if now >= self._picked_until:
            self._picked, self._picked_until = self.relays.pick(), now + PICK_EVERY
        return self._picked

    def _open(self, preferred: SmtpTarget | None) -> Session | None:
        """A new session to the preferred relay, if the cap grants it a slot."""
        # Every relay set aside: try the first again (an operator's resume must be tried).
        target = preferred or self.relays.targets[0]
        key = relay_key(target)
        try:
            slot = self.cap.acquire(key, self.name, wait_seconds=0 if self._all else FIRST_SLOT_WAIT)
        except BaseException:
            with self._cond:
                self._opening -= 1
                self._cond.notify_all()
            raise
        with self._cond:  # one step: the place reserved by _opening becomes the session
            self._opening -= 1
            if slot is None:
                # The cap is full (other workers hold it): use the sessions we have.
                self._cap_full_until = time.monotonic() + CAP_FULL_BACKOFF
                self._cond.notify_all()
                return None
            session = Session(SmtpConnection(target, self.timeout, local_hostname=self.helo,
                                             connect_timeout=self.connect_timeout, data_timeout=self.data_timeout),
                              key, slot)
            self._all.add(session)
            return session

    def checkin(self, session: Session) -> None:
        session.last_used = time.monotonic()
        with self._cond:
            if not (self._closed.is_set() or session.evict) and session in self._all:
                self._free.append(session)
                self._cond.notify()
                return
        self.discard(session)

    def discard(self, session: Session) -> None:
        """Close a session (QUIT) and give its slot back."""
        with self._cond:
            if session not in self._all:
                return
            self._all.discard(session)
            if session in self._free:
                self._free.remove(session)
            self._cond.notify_all()
        session.conn.close()
        self.cap.release(session.relay, session.slot)

    # ------------------------------------------------------------------ messages

    def submit(self, job: Job) -> None:
        """Send `job`'s message on a session of this lane; `job.answer` says what became of it."""
        self.executor.submit(job)

    def _carry(self, job: Job) -> None:
        """On a sender thread: a message, and those that follow it on the same session;
        a message the relay dropped before its dot starts over (another session or relay)."""
        pending = [job]
        while pending:
            pending.extend(self._one(pending.pop()))

    def _one(self, job: Job) -> list[Job]:
        """`job`'s message from its envelope on, chaining the queued ones behind it while
        the session can; returns the messages that have to start over (last first)."""
        try:
            session = self._begin(job)
        except BaseException as exc:  # noqa: BLE001 — given up (still_wanted), or a bug: the batch decides
            job.answer(None, exc)
            return []
        if session is None:
            return []  # answered
        while True:
            follower = self._follower(session)
            chained = follower is not None and follower.permitted
            try:
                outcome, ready, refusal = session.conn.finish(
                    data_payload(job.data, wire_ready=True),
                    (follower.sender, follower.recipient) if chained else None)
            except BaseException as exc:  # noqa: BLE001 — a bug: never a half-known session again
                self.discard(session)
                job.answer(None, exc)
                return [follower] if follower is not None else []
            again = []
            if outcome.verdict == Verdict.unavailable and job.restarts < MAX_RESTARTS:
                job.restarts += 1  # dropped before its dot could leave (or 421 to it): nothing accepted
                again.append(job)
            else:
                job.answer(outcome, None)
            if follower is not None and ready and not again:
                job = follower
                continue
            self.checkin(session)
            if follower is not None:
                if refusal is not None and _for_the_reader(refusal):
                    follower.answer(refusal, None)
                else:  # not chained, its replies lost, or a refusal of us: from the start
                    again.insert(0, follower)
            return again

    def _begin(self, job: Job) -> Session | None:
        """A session waiting for `job`'s message (354), or None once `job` is answered.

        A relay that is unavailable at connect (or refuses us) is set aside and the next
        one is tried; a session the relay drops mid-envelope is tried again on a fresh
        connection.  The job is answered with the relay's failure only when no relay is
        left (the batch then waits, or pauses for a refusal of us)."""
        job.still_wanted()  # queued before its batch stopped (a pause): it stays unsent
        while True:
            session = self.checkout(still_wanted=job.still_wanted)
            assert session is not None
            # A new session connects first: the permission is then used within one
            # dialogue, not after TCP, greeting, EHLO, STARTTLS and AUTH.
            fresh = not session.conn.is_open
            outcome = session.conn.connect()
            if outcome is None:
                if fresh:
                    self.relays.back(session.conn.target)
                if not job.permitted:
                    try:
                        job.before(True)
                    except BaseException:  # the caller gave the message up: the session is intact
                        self.checkin(session)
                        raise
                    job.permitted = True
                try:
                    outcome = session.conn.begin(job.sender, job.recipient)
                except BaseException:
                    self.discard(session)
                    raise
                if outcome is None:
                    return session
            if outcome.verdict not in (Verdict.unavailable, Verdict.sender_refused):
                self.checkin(session)  # the reader's answer
                job.answer(outcome, None)
                return None
            # The relay, not the reader: nothing was accepted.
            job.restarts += 1
            if outcome.stage == "connect" or outcome.verdict == Verdict.sender_refused \
                    or job.restarts > MAX_RESTARTS:
                self.relays.set_aside(session.conn.target, _refusal(outcome),
                                      unavailable=outcome.verdict == Verdict.unavailable)
                self._picked_until = 0.0
                self.discard(session)
                if self.relays.all_set_aside() or job.restarts > MAX_RESTARTS + len(self.relays.targets):
                    job.answer(outcome, None)
                    return None
            else:
                self.checkin(session)  # its connection was dropped: the next use reconnects

    def _follower(self, session: Session) -> Job | None:
        """The next queued message of the lane, taken by this session; `permitted` if its
        envelope may go with the current message's end (the session pipelines and stays on
        the preferred relay, the addresses suit it, the rate limiter allows it now)."""
        job = self.executor.take_ready()
        if job is None:
            return None
        try:
            job.still_wanted()
        except BaseException as exc:  # noqa: BLE001 — its batch stopped: given up, never sent
            job.answer(None, exc)
            return None
        preferred = self._preferred()
        if (preferred is not None and relay_key(preferred) != session.relay) or session.evict \
                or not session.conn.can_follow(job.sender, job.recipient):
            return job
        if not job.permitted:
            try:
                job.permitted = bool(job.before(False))
            except BaseException as exc:  # noqa: BLE001 — as in _begin: the batch decides
                job.answer(None, exc)
                return None
        return job

    # ------------------------------------------------------------------ upkeep

    def _keep(self) -> None:
        """Every KEEP_EVERY: close idle sessions, and free ones whose slot another process
        waits for; renew the slots of the others when due.  Never dies of an error."""
        renew_every = max(0.2, min(self.cap.renew_every, self.idle_seconds / 2))
        next_renewal = time.monotonic() + renew_every
        while not self._closed.wait(KEEP_EVERY):
            try:
                self._upkeep(renew=time.monotonic() >= next_renewal)
            except Exception:  # noqa: BLE001 — the keeper must live on (slot renewals)
                log.exception("smtp.pool.upkeep_failed", lane=self.name)
            if time.monotonic() >= next_renewal:
                next_renewal = time.monotonic() + renew_every

    def _take_free(self, pick: Callable[[Session], bool]) -> list[Session]:
        """Take the free sessions `pick` chooses out of the pool, under the lock: once
        taken, `checkout` can no longer hand them out, so closing them races with nothing."""
        with self._cond:
            taken = [s for s in self._free if pick(s)]
            for session in taken:
                self._free.remove(session)
            return taken

    def _upkeep(self, renew: bool) -> None:
        now = time.monotonic()
        idle = self._take_free(lambda s: now - s.last_used >= self.idle_seconds)
        if self._free and self.executor.idle():
            # Nothing queued here, and another process (or lane) was refused a slot: give
            # the free sessions' slots back now rather than after SMTP_IDLE_SECONDS.
            relays = {s.relay for s in self.sessions()}
            wanted = {r for r in relays if self.cap.wanted(r)}
            if wanted:
                idle += self._take_free(lambda s: s.relay in wanted)
        for session in idle:
            self.discard(session)
        if idle:
            log.info("smtp.pool.idle_closed", lane=self.name, sessions=len(idle))
        if not renew:
            return
        for session in self.sessions():
            if not self.cap.renew(session.relay, session.slot):
                session.evict = True  # closed at its checkin, or now if it is free
                for free in self._take_free(lambda s, session=session: s is session):
                    self.discard(free)

    def close(self) -> None:
        """QUIT every free session and give its slot back; busy ones follow at checkin."""
        self._closed.set()
        self.executor.shutdown(wait=False)
        with self._cond:
            free = list(self._free)
        for session in free:
            self.discard(session)

    # ------------------------------------------------------------------ for tests and status

    def sessions(self) -> list[Session]:
        with self._cond:
            return list(self._all)

    @property
    def connections_opened(self) -> int:
        """TCP connections opened by this lane's sessions (a reopen counts again)."""
        with self._cond:
            return sum(s.conn.opened for s in self._all)


def _for_the_reader(refusal: Outcome) -> bool:
    """A chained envelope's refusal that is this reader's answer (550 no such user, 451
    try later …), as `begin` would have had it.  Not a refusal of *us* (another relay
    should take the message) nor a closing connection (421, or no reply: a new session
    should): those start over."""
    return refusal.verdict != Verdict.sender_refused and refusal.code not in (None, 421)


def _refusal(outcome: Outcome) -> str:
    """A short category for the relay's set-aside (logged; no address in it)."""
    if outcome.stage == "connect":
        text = outcome.reply.lower()
        if "tls" in text:
            return "tls"
        if "refused" in text:
            return "refused"
        if outcome.code in (530, 534, 535) or "auth" in text:
            return "auth"
    enhanced = enhanced_status(outcome.reply)
    if enhanced:
        return ".".join(map(str, enhanced))
    return f"{outcome.code or 'no reply'} at {outcome.stage}"


# ---------------------------------------------------------------------- per process

_lanes: dict[str, Lane] = {}
_lanes_lock = threading.Lock()


def _fingerprint(settings: Settings) -> tuple:
    return (os.getpid(), settings.smtp_url, settings.smtp_timeout, settings.smtp_connect_timeout,
            settings.smtp_data_timeout, settings.smtp_connections,
            settings.smtp_idle_seconds, settings.smtp_max_connections, settings.smtp_alert_connections,
            settings.smtp_relay_set_aside_seconds, settings.redis_url, settings.redis_key_prefix,
            settings.mail_from)


def lane(settings: Settings, kind: str) -> Lane:
    """This process's lane for an edition kind, made again after a fork or a settings change."""
    name = lane_name(kind)
    fingerprint = _fingerprint(settings)
    with _lanes_lock:
        old = _lanes.get(name)
        if old is not None and old.fingerprint == fingerprint:
            return old
        new = _lanes[name] = Lane(settings, name, fingerprint)
    if old is not None and old.pid == os.getpid():
        old.close()
    return new


def close_all() -> None:
    """Close every lane of this process (worker shutdown; tests, on a settings reset)."""
    with _lanes_lock:
        lanes = list(_lanes.values())
        _lanes.clear()
    for each in lanes:
        if each.pid == os.getpid():  # a parent's lanes are the parent's to close
            each.close()


on_reset(close_all)


def prewarm(settings: Settings, kind: str = ALERT) -> bool:
    """Open one session of the lane now, so the first message does not pay for TCP,
    greeting, EHLO, STARTTLS and AUTH (an alert worker calls this when it starts).
    False if it could not (logged; the first message then connects, as always)."""
    pool = lane(settings, kind)
    session = pool.checkout(wait=FIRST_SLOT_WAIT)
    if session is None:
        log.warning("smtp.prewarm_failed", lane=pool.name, reason="no slot of the connection cap")
        return False
    failed = session.conn.connect()
    if failed is not None:
        pool.discard(session)  # nothing half-open is kept for the first message
        log.warning("smtp.prewarm_failed", lane=pool.name, server=repr(session.conn.target),
                    stage=failed.stage, code=failed.code)
        return False
    pool.checkin(session)
    return True


# ---------------------------------------------------------------------- one-off mails


@dataclass(eq=False, kw_only=True)
class _OneOff(Job):
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    error: BaseException | None = None
    wait_until: float = 0.0  # monotonic: how long it may wait for a session (the cap may be full)

    def still_wanted(self) -> None:
        if time.monotonic() > self.wait_until:
            raise SmtpTransientError(Outcome(Verdict.unavailable, None, "no SMTP session free in time", "connect"))

    def answer(self, outcome: Outcome | None, error: BaseException | None) -> None:
        self.outcome, self.error = outcome, error
        self.done.set()


def send_now(settings: Settings, sender: str, recipient: str, data: bytes) -> Outcome:
    """Send one message now on the alert lane: a confirmation, a welcome, an editor's
    test copy — the same sessions, relays, failover, cap and rule after the dot as every
    edition, only without a ledger row (and so without the rate limiter).

    The final dot may have left and no answer came: with SMTP_AMBIGUOUS=resend it goes
    once more (the same bytes, so the same Message-ID) and counts as a possible
    duplicate; with `hold` that answer is returned (`unknown`: maybe delivered).
    Raises SmtpTransientError (an OSError: Celery retries it) when the relays are
    unavailable, refuse us, or say 4xx; SmtpError when the reader's address is refused.
    """
    pool = lane(settings, ALERT)
    payload = data_payload(data)[:-3]  # CRLF lines, dot-stuffed: what the lane writes as is
    outcome = None
    for attempt in range(2):
        job = _OneOff(sender=sender, recipient=recipient, data=payload,
                      wait_until=time.monotonic() + settings.smtp_connect_timeout + settings.smtp_timeout)
        pool.submit(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        outcome = job.outcome
        assert outcome is not None
        if outcome.verdict != Verdict.unknown or settings.smtp_ambiguous == "hold" or attempt:
            break
        metrics.possible_duplicate("one-off")
        log.warning("smtp.one_off.resent_ambiguous", reply=scrub(outcome.reply))
    if outcome.verdict in (Verdict.sent, Verdict.unknown):
        return outcome
    if outcome.verdict in (Verdict.failed, Verdict.bounced):
        raise SmtpError(outcome)
    raise SmtpTransientError(outcome)
