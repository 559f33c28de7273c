"""Refund requests, their state machine, review and policies."""
