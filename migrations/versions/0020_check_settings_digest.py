"""check results and leases carry the digest of the settings they were made with

Revision ID: 0020
Revises: 0005
Create Date: 2026-12-01 11:40:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0020'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('broker_checks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settings_digest', sa.String(length=64), nullable=True))
        batch_op.create_index('ix_broker_checks_protocol_digest', ['protocol', 'settings_digest'],
                              unique=False)

    with op.batch_alter_table('check_leases', schema=None) as batch_op:
        batch_op.add_column(sa.Column('settings_digest', sa.String(length=64), nullable=True))


def downgrade():
    with op.batch_alter_table('check_leases', schema=None) as batch_op:
        batch_op.drop_column('settings_digest')

    with op.batch_alter_table('broker_checks', schema=None) as batch_op:
        batch_op.drop_index('ix_broker_checks_protocol_digest')
        batch_op.drop_column('settings_digest')
