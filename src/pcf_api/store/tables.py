"""Table definitions (SQLAlchemy Core). Migrations create them; queries are built from them."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text

metadata = MetaData()

notes = Table(
    "notes",
    metadata,
    Column("id", String(40), primary_key=True),
    Column("title", String(200), nullable=False),
    Column("content", Text, nullable=False),
    Column("author", String(100), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("ix_notes_created_at", "created_at", "id"),
    Index("ix_notes_author_created_at", "author", "created_at", "id"),
)

# Who may do what with a note (the embedded authorization backend). No foreign key to notes:
# like SpiceDB's, relationships live apart from the data, so the owner can be written before
# the note and a note's relationships are dropped explicitly when it is deleted.
note_relationships = Table(
    "note_relationships",
    metadata,
    Column("note_id", String(40), primary_key=True),
    Column("subject", String(100), primary_key=True),
    Column("relation", String(16), nullable=False),  # owner | writer | reader
    Index("ix_note_relationships_subject", "subject", "note_id"),
)
