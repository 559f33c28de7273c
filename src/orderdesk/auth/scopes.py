"""API key scopes. A scope never implies another."""

PUBLIC_SCOPES = ("orders.create", "orders.read", "orders.update")
OPERATOR_SCOPES = ("orders.fulfill", "refunds.review", "webhooks.manage")
ALL_SCOPES = PUBLIC_SCOPES + OPERATOR_SCOPES

# The scopes an order's client secret grants, on that order only.
CLIENT_SECRET_SCOPES = frozenset({"orders.read", "orders.update"})
