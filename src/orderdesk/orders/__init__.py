"""Orders: quotes, create, get, list, edit and phases."""
