"""Persistence: the note store, database engine and migrations, and the events broker."""
