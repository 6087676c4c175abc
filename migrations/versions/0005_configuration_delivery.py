"""configuration delivery: service tokens, service roll-out state, the delivery outbox

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01 11:20:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('service', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('created_by', sa.String(length=80), nullable=True))
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('callback_url', sa.String(length=2048), nullable=True))
        batch_op.add_column(sa.Column('signing_secret', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('config_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('config_etag', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('fetched_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('fetched_etag', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('fetched_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('fetched_from', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('acked_version', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('acked_etag', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('ack_status', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('ack_message', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('acked_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('deliveries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('service_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('etag', sa.String(length=64), nullable=False),
    sa.Column('url', sa.String(length=2048), nullable=False),
    sa.Column('state', sa.String(length=12), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('claimed_by', sa.String(length=80), nullable=True),
    sa.Column('claimed_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['service_id'], ['services.id'], name=op.f('fk_deliveries_service_id_services'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deliveries'))
    )
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.create_index('ix_deliveries_state_due', ['state', 'due_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_deliveries_service_id'), ['service_id'], unique=False)


def downgrade():
    with op.batch_alter_table('deliveries', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_deliveries_service_id'))
        batch_op.drop_index('ix_deliveries_state_due')
    op.drop_table('deliveries')
    with op.batch_alter_table('services', schema=None) as batch_op:
        for name in ('acked_at', 'ack_message', 'ack_status', 'acked_etag', 'acked_version',
                     'fetched_from', 'fetched_at', 'fetched_etag', 'fetched_version',
                     'config_etag', 'config_version', 'signing_secret', 'callback_url'):
            batch_op.drop_column(name)
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('created_by')
        batch_op.drop_column('service')
