"""Create the notes table with its indexes for newest-first lists, overall and by author.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "notes",
        sa.Column("id", sa.String(40), primary_key=True),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("content", sa.Text, nullable=False),
        sa.Column("author", sa.String(100), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_notes_created_at", "notes", ["created_at", "id"])
    op.create_index("ix_notes_author_created_at", "notes", ["author", "created_at", "id"])


def downgrade() -> None:
    op.drop_index("ix_notes_author_created_at", table_name="notes")
    op.drop_index("ix_notes_created_at", table_name="notes")
    op.drop_table("notes")
