"""several newsletters: a reader's one subscription becomes one row per newsletter

Revision ID: 0008_newsletters
Revises: 0007_clicks_reader_clocks
Create Date: 2026-12-07

Before: one subscription on the reader's row (frequency daily|weekly|none, alerts yes|no,
their sections, digest hour and day, quiet hours, alert cap).  After: the newsletters
`daily`, `weekly` and `alerts`, and a `subscriptions` row per reader and newsletter that
carries the same choices — every reader gets what they got before, with the same
sections, at the same hour, with the same quiet hours and cap.  Editions made before
name the newsletter they were for (a special edition went to the digest readers: `daily`).
"""
import sqlalchemy as sa
from alembic import op

revision = '0008_newsletters'
down_revision = '0007_clicks_reader_clocks'
branch_labels = None
depends_on = None

FIRST = [
    # (slug, name, description, kind, frequency, position)
    ('daily', 'النشرة اليومية', 'أهم أخبار اليوم في رسالة واحدة كل صباح.', 'digest', 'daily', 0),
    ('weekly', 'النشرة الأسبوعية', 'خلاصة الأسبوع في رسالة واحدة.', 'digest', 'weekly', 1),
    ('alerts', 'عاجل', 'الأخبار العاجلة لحظة نشرها.', 'alerts', None, 2),
]


def upgrade() -> None:
    op.create_table(
        'newsletters',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('slug', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('description', sa.Text(), server_default='', nullable=False),
        sa.Column('kind', sa.Enum('digest', 'alerts', name='newsletter_kind', native_enum=False, length=20),
                  nullable=False),
        sa.Column('frequency', sa.Enum('daily', 'weekly', 'none', name='newsletter_frequency', native_enum=False,
                                       length=20), nullable=True),
        sa.Column('default_hour', sa.SmallInteger(), nullable=True),
        sa.Column('default_weekday', sa.SmallInteger(), nullable=True),
        sa.Column('sections', sa.JSON(), nullable=False),
        sa.Column('from_name', sa.String(length=128), nullable=True),
        sa.Column('list_id', sa.String(length=200), nullable=True),
        sa.Column('offered', sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column('hidden', sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column('position', sa.Integer(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_newsletters')),
        sa.UniqueConstraint('slug', name=op.f('uq_newsletters_slug')),
        sa.UniqueConstraint('name', name=op.f('uq_newsletters_name')),
        sa.UniqueConstraint('list_id', name=op.f('uq_newsletters_list_id')),
    )
    op.create_table(
        'subscriptions',
        sa.Column('newsletter_id', sa.Integer(), nullable=False),
        sa.Column('subscriber_id', sa.BigInteger(), nullable=False),
        sa.Column('sections', sa.JSON(), nullable=False),
        sa.Column('digest_hour', sa.SmallInteger(), nullable=True),
        sa.Column('digest_weekday', sa.SmallInteger(), nullable=True),
        sa.Column('quiet_start', sa.SmallInteger(), nullable=True),
        sa.Column('quiet_end', sa.SmallInteger(), nullable=True),
        sa.Column('quiet_mode', sa.String(length=10), server_default='hold', nullable=False),
        sa.Column('alert_cap', sa.SmallInteger(), nullable=True),
        sa.Column('alerts_day', sa.Date(), nullable=True),
        sa.Column('alerts_today', sa.SmallInteger(), server_default='0', nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['newsletter_id'], ['newsletters.id'],
                                name=op.f('fk_subscriptions_newsletter_id_newsletters'), ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'],
                                name=op.f('fk_subscriptions_subscriber_id_subscribers'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('newsletter_id', 'subscriber_id', name=op.f('pk_subscriptions')),
    )
    op.create_index('ix_subscriptions_subscriber_id', 'subscriptions', ['subscriber_id'])
    op.create_index('ix_subscriptions_slot', 'subscriptions', ['newsletter_id', 'digest_hour', 'digest_weekday'])
    with op.batch_alter_table('editions') as batch:
        batch.add_column(sa.Column('newsletter_id', sa.Integer(), nullable=True))
        batch.create_foreign_key(op.f('fk_editions_newsletter_id_newsletters'), 'newsletters',
                                 ['newsletter_id'], ['id'], ondelete='SET NULL')

    conn = op.get_bind()
    for slug, name, about, kind, frequency, position in FIRST:
        conn.execute(sa.text(
            "INSERT INTO newsletters (slug, name, description, kind, frequency, sections, offered, hidden,"
            " position, created_at) VALUES (:slug, :name, :about, :kind, :frequency, :sections, :yes, :no,"
            " :position, CURRENT_TIMESTAMP)"),
            {'slug': slug, 'name': name, 'about': about, 'kind': kind, 'frequency': frequency,
             'sections': '[]', 'yes': True, 'no': False, 'position': position})
    ids = dict(conn.execute(sa.text("SELECT slug, id FROM newsletters")).all())

    # Every reader's choices, moved as they are (one statement per newsletter).
    for slug in ('daily', 'weekly'):
        conn.execute(sa.text(
            "INSERT INTO subscriptions (newsletter_id, subscriber_id, sections, digest_hour, digest_weekday,"
            " quiet_mode, alerts_today, created_at)"
            " SELECT :newsletter, id, COALESCE(sections, '[]'), digest_hour, digest_weekday, 'hold', 0, created_at"
            " FROM subscribers WHERE frequency = :slug"), {'newsletter': ids[slug], 'slug': slug})
    conn.execute(sa.text(
        "INSERT INTO subscriptions (newsletter_id, subscriber_id, sections, quiet_start, quiet_end, quiet_mode,"
        " alert_cap, alerts_day, alerts_today, created_at)"
        " SELECT :newsletter, id, '[]', quiet_start, quiet_end, COALESCE(quiet_mode, 'hold'), alert_cap,"
        " alerts_day, COALESCE(alerts_today, 0), created_at FROM subscribers WHERE alerts = :yes"),
        {'newsletter': ids['alerts'], 'yes': True})
    for kind, frequency, slug in (('digest', 'daily', 'daily'), ('digest', 'weekly', 'weekly'),
                                  ('special', None, 'daily'), ('alert', None, 'alerts')):
        where = "kind = :kind" + (" AND frequency = :frequency" if frequency else "")
        conn.execute(sa.text(f"UPDATE editions SET newsletter_id = :newsletter WHERE {where}"),
                     {'newsletter': ids[slug], 'kind': kind, 'frequency': frequency})

    op.drop_index('ix_subscribers_status_frequency', table_name='subscribers')
    op.drop_index('ix_subscribers_digest_slot', table_name='subscribers')
    with op.batch_alter_table('subscribers') as batch:
        for column in ('frequency', 'alerts', 'sections', 'digest_hour', 'digest_weekday', 'quiet_start',
                       'quiet_end', 'quiet_mode', 'alert_cap', 'alerts_day', 'alerts_today'):
            batch.drop_column(column)


def downgrade() -> None:
    raise NotImplementedError("several newsletters cannot be folded back into one subscription")
