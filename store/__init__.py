"""SQLite flow store: schema, checkpoints, queries."""
