"""The operator console: server-rendered pages at /console for people, not programs."""
