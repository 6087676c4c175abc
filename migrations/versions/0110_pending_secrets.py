"""secrets typed into a form that asked first (save guard, confirmation), held encrypted until the
operator saves anyway or confirms

Revision ID: 0110
Revises: 0100
Create Date: 2026-12-05 18:50:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0110'
down_revision = '0100'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'pending_secrets',
        sa.Column('digest', sa.String(length=64), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('scope', sa.String(length=40), nullable=False),
        sa.Column('values', sa.Text(), nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint('digest'),
    )
    with op.batch_alter_table('pending_secrets', schema=None) as batch_op:
        batch_op.create_index('ix_pending_secrets_user_id', ['user_id'], unique=False)
        batch_op.create_index('ix_pending_secrets_expires_at', ['expires_at'], unique=False)


def downgrade():
    op.drop_table('pending_secrets')
