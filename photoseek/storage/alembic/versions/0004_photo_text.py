"""Keyword search: each photo's words (file name, folders, caption, keywords, text read in it)
with the back end's full-text index. Existing photos get their file and folder names from what
their rows hold (no photo is decoded); captions and OCR text arrive when a photo is next indexed.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    import os

    from photoseek.keywords import FIELDS, document
    from photoseek.storage.migrations import create_text_search

    op.create_table(
        "photo_text",
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("name", sa.String(1000), nullable=False),
        sa.Column("folders", sa.String(4000), nullable=False),
        sa.Column("caption", sa.String(4000), nullable=False),
        sa.Column("keywords", sa.String(4000), nullable=False),
        sa.Column("ocr", sa.String(8000), nullable=True),
        sa.Column("ocr_error", sa.String(500), nullable=True),
    )
    conn = op.get_bind()
    create_text_search(conn)
    roots = {i: os.fsdecode(bytes(p)) for i, p in conn.execute(sa.text("SELECT id, path FROM roots"))}
    insert = sa.text(f"INSERT INTO photo_text (image_id, {', '.join(FIELDS)}) "
                     f"VALUES (:image_id, {', '.join(':' + f for f in FIELDS)})")
    rows = conn.execute(sa.text("SELECT id, path, root_id FROM images")).all()
    for start in range(0, len(rows), 1000):
        conn.execute(insert, [dict(image_id=i, **document(os.fsdecode(bytes(p)), roots.get(r)))
                              for i, p, r in rows[start:start + 1000]])


def downgrade() -> None:
    raise NotImplementedError("photoseek does not downgrade catalogues")
