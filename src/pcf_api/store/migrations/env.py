"""Alembic environment: migrations always run on a connection handed in by pcf_api.store.migrate."""

from __future__ import annotations

from alembic import context

from pcf_api.store.tables import metadata

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `pcf-api migrate`, which supplies the connection")

context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
