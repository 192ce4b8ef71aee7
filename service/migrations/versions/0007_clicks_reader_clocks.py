"""clicks counted per link (never per reader), reader time zones, held confirmations

Revision ID: 0007_clicks_reader_clocks
Revises: 0006_feedback_events
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0007_clicks_reader_clocks'
down_revision = '0006_feedback_events'
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    # NULL time zone: the site's TIMEZONE, so every reader of today keeps their hours.
    with op.batch_alter_table('subscribers') as batch:
        batch.add_column(sa.Column('time_zone', sa.String(length=64), nullable=True))
        batch.add_column(sa.Column('confirmation_due_at', sa.DateTime(timezone=True), nullable=True))
        # The last «إدارة اشتراكك» mail (a reader's preferences link, asked for again).
        batch.add_column(sa.Column('manage_link_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_subscribers_confirmation_due', 'subscribers', ['confirmation_due_at'])
    with op.batch_alter_table('editions') as batch:
        batch.add_column(sa.Column('unsubscribes', sa.Integer(), nullable=False, server_default='0'))
        # A draft with send_at is scheduled (UTC); EditionKind gains 'special', which needs no
        # DDL: kinds are stored as plain strings (models._enum, native_enum=False, no CHECK).
        batch.add_column(sa.Column('send_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_editions_status_send_at', 'editions', ['status', 'send_at'])

    op.create_table(
        'edition_links',
        sa.Column('id', BigId, nullable=False),
        sa.Column('edition_id', sa.Integer(), nullable=False),
        sa.Column('variant', sa.String(length=200), nullable=False),
        sa.Column('position', sa.SmallInteger(), nullable=False),
        sa.Column('url', sa.Text(), nullable=False),
        sa.Column('article_id', sa.Integer(), nullable=True),
        sa.Column('section_id', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['edition_id'], ['editions.id'], name=op.f('fk_edition_links_edition_id_editions'),
                                ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['article_id'], ['articles.id'], name=op.f('fk_edition_links_article_id_articles'),
                                ondelete='SET NULL'),
        sa.ForeignKeyConstraint(['section_id'], ['sections.id'], name=op.f('fk_edition_links_section_id_sections'),
                                ondelete='SET NULL'),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_edition_links')),
        sa.UniqueConstraint('edition_id', 'variant', 'position', name='uq_edition_links_position'),
    )
    op.create_table(
        'click_counts',
        sa.Column('link_id', BigId, nullable=False),
        sa.Column('hour', sa.DateTime(timezone=True), nullable=False),
        sa.Column('clicks', sa.Integer(), nullable=False),
        sa.Column('ignored', sa.Integer(), nullable=False, server_default='0'),
        sa.ForeignKeyConstraint(['link_id'], ['edition_links.id'], name=op.f('fk_click_counts_link_id_edition_links'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('link_id', 'hour', name=op.f('pk_click_counts')),
    )
    op.create_table(
        'click_sketches',
        sa.Column('edition_id', sa.Integer(), nullable=False),
        sa.Column('scope', sa.String(length=80), nullable=False),
        sa.Column('sketch', sa.LargeBinary(), nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['edition_id'], ['editions.id'], name=op.f('fk_click_sketches_edition_id_editions'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('edition_id', 'scope', name=op.f('pk_click_sketches')),
    )


def downgrade() -> None:
    op.drop_table('click_sketches')
    op.drop_table('click_counts')
    op.drop_table('edition_links')
    op.drop_index('ix_editions_status_send_at', table_name='editions')
    with op.batch_alter_table('editions') as batch:
        batch.drop_column('send_at')
        batch.drop_column('unsubscribes')
    op.drop_index('ix_subscribers_confirmation_due', table_name='subscribers')
    with op.batch_alter_table('subscribers') as batch:
        batch.drop_column('manage_link_at')
        batch.drop_column('confirmation_due_at')
        batch.drop_column('time_zone')
