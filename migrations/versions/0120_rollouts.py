"""roll-outs in waves: a change's first wave, its deadline and whether it halted

Revision ID: 0120
Revises: 0110
Create Date: 2026-12-05 18:40:00

"""
from alembic import op
import sqlalchemy as sa



# revision identifiers, used by Alembic.
revision = '0120'
down_revision = '0110'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'rollouts',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('version', sa.Integer(), nullable=False),
        sa.Column('from_version', sa.Integer(), nullable=False),
        sa.Column('wave', sa.JSON(), nullable=False),
        sa.Column('share', sa.Integer(), nullable=True),
        sa.Column('deadline_seconds', sa.Integer(), nullable=False),
        sa.Column('auto_rollback', sa.Boolean(), nullable=False),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('actor', sa.String(length=80), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('deadline_at', sa.DateTime(timezone=True), nullable=False),
        sa.Column('halted_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('finished_at', sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint('id'),
    )
    op.create_index('ix_rollouts_state', 'rollouts', ['state'], unique=False)


def downgrade():
    op.drop_index('ix_rollouts_state', table_name='rollouts')
    op.drop_table('rollouts')
