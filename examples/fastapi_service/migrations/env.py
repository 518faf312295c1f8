"""Alembic's environment for the reference service: run through ``migrations.upgrade`` (the
service at startup, the ``migrate`` command of serve.py), which hands over an open connection;
``alembic -c examples/fastapi_service/alembic.ini upgrade head`` works too (``-x url=...``)."""
from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
