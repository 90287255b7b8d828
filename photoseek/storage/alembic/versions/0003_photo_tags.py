"""Automatic tags: photo_tags (image, tag, score, via) and tagged_photos (image, vocabulary version).
Both start empty: the next ``photoseek index`` (or ``photoseek tags``) tags every photo from its
stored embedding, without decoding any photo.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "photo_tags",
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("tag", sa.String(100), primary_key=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("via", sa.String(100)),
    )
    op.create_index("ix_photo_tags_tag_score", "photo_tags", ["tag", "score"])
    op.create_table(
        "tagged_photos",
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("vocabulary", sa.String(64), nullable=False),
    )
    op.create_index("ix_tagged_photos_vocabulary", "tagged_photos", ["vocabulary"])


def downgrade() -> None:
    raise NotImplementedError("photoseek does not downgrade catalogues")
