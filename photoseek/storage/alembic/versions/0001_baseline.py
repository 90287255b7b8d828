"""Baseline: the schema of photoseek's first releases (images, roots, skipped, runs, meta).

Catalogues written before Alembic (SQLite with ``PRAGMA user_version = 1``) are stamped here;
new catalogues are created from the models and stamped at the head, so nothing runs here.

Revision ID: 0001
"""

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    raise NotImplementedError("photoseek does not downgrade catalogues")
