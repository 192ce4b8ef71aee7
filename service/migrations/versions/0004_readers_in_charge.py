"""readers in charge: their hour, pause, quiet hours and cap; the consent record; keyed hashes

Revision ID: 0004_readers_in_charge
Revises: 0003_newsroom_desk
Create Date: 2026-12-12
"""
from alembic import op
import sqlalchemy as sa


revision = '0004_readers_in_charge'
down_revision = '0003_newsroom_desk'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest_hour', sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column('digest_weekday', sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column('paused_until', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('quiet_start', sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column('quiet_end', sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column('quiet_mode', sa.String(length=10), nullable=False, server_default='hold'))
        batch_op.add_column(sa.Column('alert_cap', sa.SmallInteger(), nullable=True))
        batch_op.add_column(sa.Column('alerts_day', sa.Date(), nullable=True))
        batch_op.add_column(sa.Column('alerts_today', sa.SmallInteger(), nullable=False, server_default='0'))
        batch_op.create_index('ix_subscribers_digest_slot', ['frequency', 'digest_hour', 'digest_weekday'],
                              unique=False)

    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_subscriber_id', ['subscriber_id'], unique=False)

    op.create_table('consents',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('subscriber_id', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=20), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('source', sa.String(length=200), nullable=True),
    sa.Column('ip', sa.String(length=64), nullable=True),
    sa.Column('user_agent', sa.String(length=500), nullable=True),
    sa.Column('form_url', sa.String(length=2000), nullable=True),
    sa.Column('text_version', sa.String(length=40), nullable=True),
    sa.Column('text', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_consents_subscriber_id_subscribers'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_consents'))
    )
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.create_index('ix_consents_subscriber_id', ['subscriber_id'], unique=False)

    op.create_table('suppressed_hashes',
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.Column('reason', sa.String(length=50), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('hash', name=op.f('pk_suppressed_hashes'))
    )

    # What readers already consented to, as far as it was kept: their signup (source and
    # time) and their confirmation, so that every reader has a record to be shown.
    op.execute(
        "INSERT INTO consents (subscriber_id, event, at, source) "
        "SELECT id, 'signup', consented_at, consent_source FROM subscribers WHERE consented_at IS NOT NULL"
    )
    op.execute(
        "INSERT INTO consents (subscriber_id, event, at) "
        "SELECT id, 'confirm', confirmed_at FROM subscribers WHERE confirmed_at IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_table('suppressed_hashes')
    with op.batch_alter_table('consents', schema=None) as batch_op:
        batch_op.drop_index('ix_consents_subscriber_id')
    op.drop_table('consents')
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index('ix_deliveries_subscriber_id')
    with op.batch_alter_table('subscribers', schema=None) as batch_op:
        batch_op.drop_index('ix_subscribers_digest_slot')
        for column in ('alerts_today', 'alerts_day', 'alert_cap', 'quiet_mode', 'quiet_end', 'quiet_start',
                       'paused_until', 'digest_weekday', 'digest_hour'):
            batch_op.drop_column(column)
