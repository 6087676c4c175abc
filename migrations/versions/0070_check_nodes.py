"""broker checks record every node of a cluster setting

Revision ID: 0070
Revises: 0030
Create Date: 2026-12-01 14:25:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0070'
down_revision = '0030'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('broker_checks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('nodes', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('broker_checks', schema=None) as batch_op:
        batch_op.drop_column('nodes')
