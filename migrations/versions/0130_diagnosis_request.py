"""a diagnosis asked for from the page: the pending request a service's agent is told about, and the
network steps it sent back

Revision ID: 0130
Revises: 0120
Create Date: 2026-12-06 00:30:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0130'
down_revision = '0120'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.add_column(sa.Column('diagnosis_request', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('diagnosis_requested_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('diagnosis_requested_by', sa.String(length=120), nullable=True))
        batch_op.add_column(sa.Column('requested_diagnosis', sa.JSON(), nullable=True))


def downgrade():
    with op.batch_alter_table('services', schema=None) as batch_op:
        batch_op.drop_column('requested_diagnosis')
        batch_op.drop_column('diagnosis_requested_by')
        batch_op.drop_column('diagnosis_requested_at')
        batch_op.drop_column('diagnosis_request')
