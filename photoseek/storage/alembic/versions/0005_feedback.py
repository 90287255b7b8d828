"""Feedback marks: a person's "right"/"wrong" on a result of a text query, one per (query, photo),
removed with its photo. ``photoseek tune`` learns from them. Existing indexes get the empty table.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "feedback",
        sa.Column("query", sa.String(1000), primary_key=True),
        sa.Column("image_id", sa.Integer(), sa.ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("mark", sa.String(5), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.CheckConstraint("mark IN ('right', 'wrong')", name="ck_feedback_mark"),
    )
    op.create_index("ix_feedback_image_id", "feedback", ["image_id"])


def downgrade() -> None:
    raise NotImplementedError("photoseek does not downgrade catalogues")
