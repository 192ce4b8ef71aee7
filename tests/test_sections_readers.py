"""How many readers a section has (`nashra sections list`, the admins' page) under several
newsletters (issue 17): counted from the sections readers chose on their digest
subscriptions — once a reader however many digests name it; readers of every section
are those with no list of their own on a digest that draws on every section.  Pending
readers, alerts and retired digests count for nothing.  PostgreSQL and SQLite (their JSON
functions differ)."""

from __future__ import annotations

import pytest

from service.articles import sections as domain
from service.db import session_scope
from service.models import Newsletter, NewsletterKind, Section, SubscriberStatus
from service.newsletters import catalogue
from service.usecases import sections
from tests.support.readers import reader


@pytest.mark.parametrize("env", ["pg_env", "sqlite_env"])
def test_readers_per_section_come_from_the_digest_subscriptions(env, request):
    request.getfixturevalue(env)
    with session_scope() as s:
        catalogue.seed_first(s)
        world, sport = Section(slug="world", name="عربي دولي", position=1), Section(slug="sport", name="رياضة", position=2)
        s.add_all([world, sport])
        s.flush()
        s.add_all([Newsletter(slug="sport-friday", name="رياضة الجمعة", kind=NewsletterKind.digest, frequency="weekly",
                              sections=[sport.id], position=5),
                   Newsletter(slug="old-one", name="نشرة قديمة", kind=NewsletterKind.digest, frequency="daily",
                              sections=[], hidden=True, offered=False, position=6)])
        s.flush()
        reader(s, "both@example.com", newsletters=["daily", "weekly"], sections=[world.id])  # world, once
        reader(s, "mixed@example.com", newsletters=["daily"], sections=[sport.id])  # sport
        reader(s, "mixed2@example.com", newsletters=["weekly", "alerts"])  # every section
        reader(s, "all@example.com", frequency="daily", alerts=True)  # every section, once
        reader(s, "pending@example.com", status=SubscriberStatus.pending, sections=[world.id])
        reader(s, "left@example.com", status=SubscriberStatus.unsubscribed, sections=[world.id])
        reader(s, "alerts@example.com", newsletters=["alerts"])
        reader(s, "friday@example.com", newsletters=["sport-friday"])  # sport's own digest: not every section
        reader(s, "retired@example.com", newsletters=["old-one"], sections=[world.id, sport.id])
    view = sections.overview()
    assert {r.slug: r.readers for r in view.sections} == {"world": 1, "sport": 1}
    assert view.every_section_readers == 2
    with session_scope() as s:
        assert domain.every_section_readers(s) == 2
