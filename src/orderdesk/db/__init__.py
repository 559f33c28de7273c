"""Database engine, sessions, shared column types and migrations."""
