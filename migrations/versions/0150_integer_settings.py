"""integer settings stored as integers: MQTT qos was saved as the string "0"/"1"/"2" (in the saved
settings and in every stored version); it is an integer now, like every other integer setting

Revision ID: 0150
Revises: 0140
Create Date: 2026-12-06 00:20:00

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0150'
down_revision = '0140'
branch_labels = None
depends_on = None

INTEGER_CHOICES = {"mqtt": ("qos",)}     # integer settings that were saved as strings


def _convert(values, to_int):
    """The protocol → field → value mapping with those fields converted; None when nothing changes."""
    changed = False
    out = {p: dict(v) for p, v in (values or {}).items()}
    for protocol, names in INTEGER_CHOICES.items():
        for name in names:
            value = out.get(protocol, {}).get(name)
            if to_int and isinstance(value, str) and value.strip().isdigit():
                out[protocol][name], changed = int(value.strip()), True
            elif not to_int and isinstance(value, int) and not isinstance(value, bool):
                out[protocol][name], changed = str(value), True
    return out if changed else None


def _migrate(to_int):
    bind = op.get_bind()
    settings = sa.table('broker_settings', sa.column('protocol', sa.String), sa.column('values', sa.JSON))
    for protocol, values in bind.execute(sa.select(settings.c.protocol, settings.c['values'])).all():
        converted = _convert({protocol: values}, to_int)
        if converted is not None:
            bind.execute(settings.update().where(settings.c.protocol == protocol)
                         .values({'values': converted[protocol]}))
    versions = sa.table('config_versions', sa.column('id', sa.Integer), sa.column('state', sa.JSON))
    for version_id, state in bind.execute(sa.select(versions.c.id, versions.c.state)).all():
        converted = _convert((state or {}).get('values'), to_int)
        if converted is not None:
            bind.execute(versions.update().where(versions.c.id == version_id)
                         .values(state={**state, 'values': converted}))


def upgrade():
    _migrate(True)


def downgrade():
    _migrate(False)
