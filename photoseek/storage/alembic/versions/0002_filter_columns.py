"""Filter columns: file type, photo date and its source, filled in from what each row already
holds (no photo is decoded or embedded again).

Revision ID: 0002
Revises: 0001
"""

import os
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    from photoseek.imaging import EXTENSION_TYPES
    from photoseek.storage.schema import photo_date

    op.add_column("images", sa.Column("file_type", sa.String(8)))
    op.add_column("images", sa.Column("photo_date", sa.DateTime()))
    op.add_column("images", sa.Column("date_source", sa.String(4)))
    conn = op.get_bind()
    rows = conn.execute(sa.text("SELECT id, path, taken_at, mtime_ns FROM images")).all()
    update = sa.text("UPDATE images SET file_type = :t, photo_date = :d, date_source = :s WHERE id = :id").bindparams(
        sa.bindparam("d", type_=sa.DateTime()))
    for row_id, path, taken_at, mtime_ns in rows:
        taken = datetime.fromisoformat(taken_at) if isinstance(taken_at, str) else taken_at
        when, source = photo_date(taken, mtime_ns)
        kind = EXTENSION_TYPES.get(os.path.splitext(os.fsdecode(bytes(path)))[1].lower())
        conn.execute(update, {"t": kind, "d": when, "s": source, "id": row_id})
    op.create_index("ix_images_file_type", "images", ["file_type"])
    op.create_index("ix_images_photo_date", "images", ["photo_date"])


def downgrade() -> None:
    raise NotImplementedError("photoseek does not downgrade catalogues")
