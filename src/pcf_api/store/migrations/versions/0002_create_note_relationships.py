"""Create note_relationships (embedded authorization) and make every note's author its owner.

Notes written before this revision have no relationships; without the backfill their authors
would lose access to them.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "note_relationships",
        sa.Column("note_id", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(100), nullable=False),
        sa.Column("relation", sa.String(16), nullable=False),
        sa.PrimaryKeyConstraint("note_id", "subject", name="pk_note_relationships"),
    )
    op.create_index("ix_note_relationships_subject", "note_relationships", ["subject", "note_id"])
    op.execute(
        "INSERT INTO note_relationships (note_id, subject, relation) "
        "SELECT id, author, 'owner' FROM notes"
    )


def downgrade() -> None:
    op.drop_index("ix_note_relationships_subject", table_name="note_relationships")
    op.drop_table("note_relationships")
