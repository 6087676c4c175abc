"""the network steps (DNS → TCP → TLS) an agent ran from the service's host with a failed
acknowledgement, beside the console's own check of that moment

Revision ID: 0100
Revises: 0090
Create Date: 2026-12-05 18:50:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0100'
down_revision = '0090'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ack_diagnosis', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_column('ack_diagnosis')
