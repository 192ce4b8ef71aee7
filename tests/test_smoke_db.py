"""The schema migrates on PostgreSQL and the ledger's uniqueness holds."""

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from service.models import Delivery, Edition, EditionKind, Subscriber


def test_ledger_row_is_unique_per_edition_and_subscriber(db_session):
    sub = Subscriber(email="reader@example.com")
    ed = Edition(kind=EditionKind.alert)
    db_session.add_all([sub, ed])
    db_session.flush()
    db_session.add(Delivery(edition_id=ed.id, subscriber_id=sub.id))
    db_session.flush()
    with pytest.raises(IntegrityError):
        with db_session.begin_nested():
            db_session.add(Delivery(edition_id=ed.id, subscriber_id=sub.id))
            db_session.flush()
    count = db_session.scalar(sa.select(sa.func.count()).select_from(Delivery))
    assert count == 1
