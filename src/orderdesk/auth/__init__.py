"""Projects, API keys, scopes and order client secrets."""
