"""Every feature's models, imported so the metadata and migrations see all tables."""

from orderdesk.auth.models import ApiKey, Project
from orderdesk.catalog.models import Product
from orderdesk.console.models import ConsoleLoginAttempt, ConsoleSession, ConsoleUser
from orderdesk.jobs.models import Job
from orderdesk.orders.models import LineItem, Order, OrderEvent
from orderdesk.payments.models import AddressNonce, DevnetJournalEntry
from orderdesk.refunds.models import IdempotencyRecord, Payout, Refund
from orderdesk.shipping.models import Package, TrackingEvent
from orderdesk.webhooks.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint

__all__ = [
    "AddressNonce",
    "ApiKey",
    "ConsoleLoginAttempt",
    "ConsoleSession",
    "ConsoleUser",
    "DevnetJournalEntry",
    "IdempotencyRecord",
    "Job",
    "LineItem",
    "Order",
    "OrderEvent",
    "Package",
    "Payout",
    "Product",
    "Project",
    "Refund",
    "TrackingEvent",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookEndpoint",
]
