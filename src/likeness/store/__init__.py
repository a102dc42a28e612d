"""Persistence: the SQLite database (schema and migrations), the blob store, and typed row access."""
