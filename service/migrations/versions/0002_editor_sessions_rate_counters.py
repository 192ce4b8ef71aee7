"""editors' page sessions; rate counters that need no Redis

Revision ID: 0002_sessions_limits
Revises: 0001
Create Date: 2026-12-01
"""
from alembic import op
import sqlalchemy as sa


revision = '0002_sessions_limits'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('editor_sessions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('editor_id', sa.Integer(), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['editor_id'], ['editors.id'], name=op.f('fk_editor_sessions_editor_id_editors'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_editor_sessions')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_editor_sessions_secret_hash'))
    )
    with op.batch_alter_table('editor_sessions', schema=None) as batch_op:
        batch_op.create_index('ix_editor_sessions_expires_at', ['expires_at'], unique=False)

    op.create_table('rate_counters',
    sa.Column('bucket', sa.String(length=40), nullable=False),
    sa.Column('key', sa.String(length=64), nullable=False),
    sa.Column('window', sa.BigInteger(), nullable=False),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('bucket', 'key', 'window', name=op.f('pk_rate_counters'))
    )
    with op.batch_alter_table('rate_counters', schema=None) as batch_op:
        batch_op.create_index('ix_rate_counters_expires_at', ['expires_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('rate_counters', schema=None) as batch_op:
        batch_op.drop_index('ix_rate_counters_expires_at')
    op.drop_table('rate_counters')
    with op.batch_alter_table('editor_sessions', schema=None) as batch_op:
        batch_op.drop_index('ix_editor_sessions_expires_at')
    op.drop_table('editor_sessions')
