"""users signed in through LDAP or OpenID Connect: where each user comes from, the groups of their
last sign-in

Revision ID: 0090
Revises: 0070
Create Date: 2026-12-05 18:40:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0090'
down_revision = '0070'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('source', sa.String(length=16), nullable=False,
                                      server_default='local'))
        batch_op.add_column(sa.Column('groups', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('last_sign_in_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('last_sign_in_at')
        batch_op.drop_column('groups')
        batch_op.drop_column('source')
