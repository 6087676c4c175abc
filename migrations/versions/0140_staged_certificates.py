"""a client certificate and key staged next to the current one (tried, then promoted or discarded)

Revision ID: 0140
Revises: 0130
Create Date: 2026-12-06 00:10:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0140'
down_revision = '0130'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'staged_certificates',
        sa.Column('protocol', sa.String(length=16), nullable=False),
        sa.Column('filename', sa.String(length=255), nullable=False),
        sa.Column('format', sa.String(length=16), nullable=False),
        sa.Column('certs_pem', sa.Text(), nullable=False),
        sa.Column('key_ciphertext', sa.Text(), nullable=False),
        sa.Column('staged_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('staged_by', sa.String(length=80), nullable=True),
        sa.PrimaryKeyConstraint('protocol', name=op.f('pk_staged_certificates')),
    )


def downgrade():
    op.drop_table('staged_certificates')
