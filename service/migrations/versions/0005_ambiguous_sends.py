"""ambiguous sends: how often a row's message went once more after its final dot got no answer

Revision ID: 0005_ambiguous_sends
Revises: 0004_readers_in_charge
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0005_ambiguous_sends'
down_revision = '0004_readers_in_charge'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SMTP_AMBIGUOUS=resend: each such resend is a possible duplicate, shown in status.
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ambiguous', sa.SmallInteger(), nullable=False, server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_column('ambiguous')
