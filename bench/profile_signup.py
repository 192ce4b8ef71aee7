"""Where a signup's CPU goes: the use-case piece by piece, and by library.

Runs in one process, no HTTP (bench/bench_signup_load.py measures the whole server):

  1. each step of `usecases.subscribers.sign_up` on its own, CPU ms per call (best and
     median of rounds), a database step as "+ over a bare transaction";
  2. the whole `sign_up`, and the statements it sends;
  3. a cProfile of 300 signups (CPU clock), its own time summed by library.

    .venv/bin/python bench/profile_signup.py [--rounds 6] [--before REV]

`--before REV` runs REV's subscribers/lifecycle.py against today's schema, so REV must
share it: a revision from before several newsletters (migration 0008) signs readers up
into columns that are gone.

Needs PostgreSQL (BENCH_PG_ADMIN_URL) and redis-server on PATH.  On a shared machine
the absolute figures move with the load; compare lines of the same run.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import re
import subprocess
import sys
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from bench.support import insert_readers, redis_server, scratch_database  # noqa: E402


def measure(body, rounds: int, n: int = 150) -> tuple[float, float]:
    """(best, median) CPU ms per call of body(i)."""
    out = []
    for r in range(rounds):
        for i in range(10):
            body(-(r * 10 + i) - 1)
        started = time.process_time()
        for i in range(n):
            body(r * n + i)
        out.append((time.process_time() - started) / n * 1000)
    out.sort()
    return out[0], out[len(out) // 2]


def load_before(rev: str):
    """The signup's own modules as they were at git revision `rev` — limits.py,
    subscribers/manage_link.py, subscribers/lifecycle.py, usecases/subscribers.py,
    wired to each other — beside
    today's: returns that revision's `usecases.subscribers` module."""
    def load(path: str, name: str, **wiring):
        source = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        module = types.ModuleType(f"{name}_before")
        sys.modules[module.__name__] = module  # dataclasses look their module up there
        exec(compile(source, f"{rev[:10]}:{path}", "exec"), module.__dict__)
        module.__dict__.update(wiring)
        return module

    limits = load("service/limits.py", "service.limits")
    manage_link = load("service/subscribers/manage_link.py", "service.subscribers.manage_link")
    lifecycle = load("service/subscribers/lifecycle.py", "service.subscribers.lifecycle", limits=limits,
                     manage_link=manage_link)
    return load("service/usecases/subscribers.py", "service.usecases.subscribers", lifecycle=lifecycle)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--before", metavar="REV",
                        help="also time sign_up with limits.py, lifecycle.py and usecases/subscribers.py of this "
                             "git revision, in turns with today's")
    args = parser.parse_args()

    with scratch_database("profile_signup") as url, redis_server() as redis_url:
        with sa.create_engine(url).begin() as c:
            c.execute(sa.text("INSERT INTO sections (slug, name, position) "
                              "VALUES ('world', 'عربي دولي', 1), ('sport', 'رياضة', 2)"))
        os.environ.update(DATABASE_URL=url, REDIS_URL=redis_url, SECRET_KEY="bench-secret-key-0123456789",
                          LOG_LEVEL="WARNING", LOG_FORMAT="json",
                          CONFIRM_BUDGET_PER_DOMAIN="0", CONFIRM_BUDGET_TOTAL="0")
        from service.config import reset_settings

        reset_settings()
        from service.logs import setup_logging

        setup_logging()
        from service import limits
        from service.db import get_engine, insert_ignoring, session_scope
        from service.jobs import install_dispatcher, names
        from service.jobs.dispatch import _send
        from service.models import Subscriber, SubscriberStatus, audit, utcnow
        from service.subscribers import confirm_budget, consent, signup_rows, suppression
        from service.subscribers.consent import Evidence
        from service.subscribers.validation import normalise_email, section_ids
        from service.usecases import subscribers as readers

        install_dispatcher()
        from service.config import get_settings

        # The budgets are off for the signups here (every address is example.com); their
        # two counters are timed on their own, as production counts them.
        budgets = get_settings().model_copy(update={"confirm_budget_per_domain": 100,
                                                    "confirm_budget_total": 10**9})
        evidence = Evidence(ip="10.0.0.1", user_agent="bench", form_url="https://news.example/",
                            text_version=consent.CURRENT)
        with session_scope() as s:
            s.add(Subscriber(email="fixed@example.com", status=SubscriberStatus.pending))
        with session_scope() as s:
            fixed = s.scalar(sa.select(Subscriber.id))

        def in_tx(step):
            def body(i):
                with session_scope() as s:
                    s.execute(sa.text("SELECT 1"))
                    step(s, i)
            return body

        steps = {
            "bare transaction (SELECT 1)": in_tx(lambda s, i: None),
            "section_ids": in_tx(lambda s, i: section_ids(s, ["1", "2"])),
            "is_suppressed": in_tx(lambda s, i: suppression.is_suppressed(s, f"s{i}@example.com")),
            "insert the reader (Table)": in_tx(lambda s, i: s.execute(insert_ignoring(s, Subscriber, ["email"]).values(
                email=f"p{i}@example.com", status=SubscriberStatus.pending, consent_source="web:form",
                consented_at=None).returning(Subscriber.id)).scalar()),
            "new reader: 4 rows, 1 statement": in_tx(lambda s, i: signup_rows.insert_new(
                s, signup_rows.NewReader(f"n{i}@example.com", [1], "daily", True, "web:form", None, None, None),
                evidence, now=utcnow(), counter=("confirm-mail", 86400))),
            "SELECT … FOR UPDATE (ORM)": in_tx(lambda s, i: s.scalar(
                sa.select(Subscriber).where(Subscriber.email == "fixed@example.com").with_for_update())),
            "audit row (ORM, flushed)": in_tx(lambda s, i: (audit(s, "subscriber:1", "signup", "subscriber:1"),
                                                             s.flush())),
            "consent row (ORM, flushed)": in_tx(lambda s, i: (consent.record(s, fixed, "signup", evidence),
                                                               s.flush())),
            "confirm-mail counter (DB)": in_tx(lambda s, i: limits.hit_in(s, "confirm-mail", f"c{i}@example.com",
                                                                        3, 86400)),
            "client limit (Redis)": lambda i: limits.hit("subscribe", f"10.9.{i >> 8 & 255}.{i & 255}", 5, 600),
            "confirmation budget (Redis)": lambda i: confirm_budget.due_time(f"b@d{i}.example", utcnow(), budgets),
            "confirmation queued (Celery)": lambda i: _send(names.SEND_TRANSACTIONAL, ("confirm", 10**9 + i)),
            "normalise_email": lambda i: normalise_email(f"Reader{i}@Example.com"),
        }
        count = [0]

        def sign_up(_i):
            count[0] += 1
            readers.sign_up(readers.SignupRequest(email=f"r{count[0]}@example.com", sections=["1", "2"],
                                                  frequency="daily", alerts="yes", consented=True),
                            source="web:form", evidence=evidence)

        bare = None
        print(f"CPU ms per call, best / median of {args.rounds} rounds")
        for name, body in steps.items():
            best, median = measure(body, args.rounds)
            extra = ""
            if bare is None:
                bare = best
            elif name != "bare transaction (SELECT 1)" and body.__name__ == "body":
                extra = f"   (+{best - bare:.3f} over a bare transaction)"
            print(f"  {name:<32} {best:7.3f} / {median:7.3f}{extra}")

        statements = [0]
        sa.event.listen(get_engine(), "before_cursor_execute", lambda *a: statements.__setitem__(0, statements[0] + 1))
        if args.before:
            # A/B in turns: the same signups through the signup's modules as they were at
            # `--before` (git show) and as they are, so that a busy machine's swings fall
            # on both alike.
            current = readers
            before_module = load_before(args.before)
            figures = {"before": [], "now": []}
            for _ in range(args.rounds):
                for label, module in (("before", before_module), ("now", current)):
                    readers = module
                    figures[label].append(measure(sign_up, 1)[0])
            readers = current
            for label in ("before", "now"):
                rounds = sorted(figures[label])
                print(f"  {'sign_up, ' + label:<32} {rounds[0]:7.3f} / {rounds[len(rounds) // 2]:7.3f}"
                      + (f"   (at {args.before[:10]})" if label == "before" else ""))
            print(f"  ratio now / before: best {min(figures['now']) / min(figures['before']):.2f}x, "
                  f"median {sorted(figures['now'])[args.rounds // 2] / sorted(figures['before'])[args.rounds // 2]:.2f}x")
        before = statements[0]
        best, median = measure(sign_up, args.rounds)
        per = (statements[0] - before) / (args.rounds * 160)
        print(f"  {'sign_up, whole':<32} {best:7.3f} / {median:7.3f}   ({per:.1f} statements + BEGIN/COMMIT)")

        # The answer must not tell a stranger who is subscribed: what a signup costs for
        # each kind of address (CPU, not the wire: the closer together, the less a
        # stranger timing the answers can learn).
        with get_engine().begin() as c:
            insert_readers(c, args.rounds * 2 * 160, email="'a' || i || '@example.com'")
        kinds = {"new address": lambda k: f"k{k}@example.com",
                 "active, link sent": lambda k: f"a{k}@example.com",
                 "active, link throttled": lambda k: f"a{k % 100 + 1}@example.com"}
        codes = [("now", readers)] + ([("before", load_before(args.before))] if args.before else [])
        used = collections.Counter()
        by_kind = collections.defaultdict(list)
        for _ in range(args.rounds):
            for code, module in codes:
                for kind, address in kinds.items():
                    def body(_i, module=module, address=address, kind=kind):
                        used[kind] += 1
                        module.sign_up(module.SignupRequest(email=address(used[kind]), sections=["1", "2"],
                                                            frequency="daily", alerts="yes", consented=True),
                                       source="web:form", evidence=evidence)
                    by_kind[(code, kind)].append(measure(body, 1)[0])
        print("\nsign_up by kind of address, CPU ms, best / median (in turns):")
        for code, _ in codes:
            for kind in kinds:
                rounds = sorted(by_kind[(code, kind)])
                print(f"  {code:<7} {kind:<24} {rounds[0]:7.3f} / {rounds[len(rounds) // 2]:7.3f}")
            medians = [sorted(by_kind[(code, kind)])[args.rounds // 2] for kind in kinds]
            print(f"  {code:<7} {'spread of the medians':<24} {max(medians) - min(medians):7.3f}")

        profile = cProfile.Profile(time.process_time)
        profile.enable()
        for i in range(300):
            sign_up(i)
        profile.disable()
        by_lib: collections.Counter = collections.Counter()
        for (path, _line, _name), (_cc, _nc, own, _cum, _callers) in pstats.Stats(profile).stats.items():
            found = re.search(r"site-packages/(\w+)(?:/(\w+))?", path)
            if found:
                lib = found[1] + (f".{found[2]}" if found[1] == "sqlalchemy" and found[2] else "")
            elif "/service/" in path:
                lib = "service (ours)"
            else:
                lib = "python (builtins, stdlib)"
            by_lib[lib] += own
        total = sum(by_lib.values())
        print("\nown CPU time of 300 signups under cProfile, by library:")
        for lib, own in by_lib.most_common(12):
            print(f"  {own / total * 100:5.1f} %  {lib}")


if __name__ == "__main__":
    main()
