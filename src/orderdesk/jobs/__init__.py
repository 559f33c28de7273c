"""The transactional outbox and the worker that runs it."""
