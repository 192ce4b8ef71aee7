"""the newsroom's desk: editors' tokens expire, sections can be hidden, the audit says from where

Revision ID: 0003_newsroom_desk
Revises: 0002_sessions_limits
Create Date: 2026-12-10
"""
import datetime as dt

from alembic import op
import sqlalchemy as sa


revision = '0003_newsroom_desk'
down_revision = '0002_sessions_limits'
branch_labels = None
depends_on = None

# Tokens made before this revision never expired: they get the default lifetime from
# now (EDITOR_TOKEN_DAYS' default), so nobody is locked out by the upgrade itself.
EXISTING_TOKENS_DAYS = 90


def upgrade() -> None:
    with op.batch_alter_table('editors', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_expires_at', sa.DateTime(timezone=True), nullable=True))
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=EXISTING_TOKENS_DAYS)
    if op.get_bind().dialect.name == 'sqlite':
        expires = expires.replace(tzinfo=None)  # SQLite keeps UTC, naive (models.UTCDateTime)
    op.execute(sa.text('UPDATE editors SET token_expires_at = :t').bindparams(
        sa.bindparam('t', expires, type_=sa.DateTime(timezone=True))))
    with op.batch_alter_table('editors', schema=None) as batch_op:
        batch_op.alter_column('token_expires_at', existing_type=sa.DateTime(timezone=True), nullable=False)

    with op.batch_alter_table('sections', schema=None) as batch_op:
        batch_op.add_column(sa.Column('hidden', sa.Boolean(), nullable=False, server_default=sa.false()))

    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.add_column(sa.Column('origin', sa.String(length=200), nullable=True))
        batch_op.create_index('ix_audit_log_at', ['at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_log_at')
        batch_op.drop_column('origin')
    with op.batch_alter_table('sections', schema=None) as batch_op:
        batch_op.drop_column('hidden')
    with op.batch_alter_table('editors', schema=None) as batch_op:
        batch_op.drop_column('token_expires_at')
