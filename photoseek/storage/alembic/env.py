"""Alembic's environment for photoseek: migrations run on the connection photoseek hands over
(see photoseek.storage.migrations), inside its transaction."""

from alembic import context

from photoseek.storage.schema import Base

connection = context.config.attributes["connection"]
# render_as_batch: SQLite alters tables by copying them; Alembic's batch mode does that for us.
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite")
with context.begin_transaction():
    context.run_migrations()
