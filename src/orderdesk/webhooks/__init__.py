"""Signed webhooks to merchants: endpoints, event emission and at-least-once delivery.

Other features call `orderdesk.webhooks.services.emit_event` with one of the event
type constants of `orderdesk.webhooks.events` in the transaction of the change.
"""
