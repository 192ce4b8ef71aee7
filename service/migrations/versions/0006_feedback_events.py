"""feedback events: bounces, complaints and delivery reports from every source

Revision ID: 0006_feedback_events
Revises: 0005_ambiguous_sends
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0006_feedback_events'
down_revision = '0005_ambiguous_sends'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # The soft-bounce policy counts these; a provider's event id (hashed) makes a webhook
    # delivered twice change nothing more.
    op.create_table(
        'feedback_events',
        sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
        sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('source', sa.String(length=20), nullable=False),
        sa.Column('kind', sa.String(length=20), nullable=False),
        sa.Column('subscriber_id', sa.BigInteger(), nullable=True),
        sa.Column('edition_id', sa.Integer(), nullable=True),
        sa.Column('delivery_id', sa.BigInteger(), nullable=True),
        sa.Column('status', sa.String(length=20), nullable=True),
        sa.Column('event_key', sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(['subscriber_id'], ['subscribers.id'], name=op.f('fk_feedback_events_subscriber_id_subscribers'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_feedback_events')),
        sa.UniqueConstraint('event_key', name=op.f('uq_feedback_events_event_key')),
    )
    op.create_index('ix_feedback_events_subscriber_kind', 'feedback_events', ['subscriber_id', 'kind', 'received_at'])


def downgrade() -> None:
    op.drop_index('ix_feedback_events_subscriber_kind', table_name='feedback_events')
    op.drop_table('feedback_events')
