"""Order phases and the quote, payment and delivery status values of the API."""

from enum import StrEnum


class Phase(StrEnum):
    QUOTE = "quote"
    PAYMENT = "payment"
    DELIVERY = "delivery"
    COMPLETED = "completed"


class QuoteStatus(StrEnum):
    VALID = "valid"
    EXPIRED = "expired"
    REQUIRES_RECIPIENT = "requires-recipient"
    REQUIRES_PHYSICAL_ADDRESS = "requires-physical-address"
    ALL_LINE_ITEMS_UNAVAILABLE = "all-line-items-unavailable"


class LineItemQuoteStatus(StrEnum):
    VALID = "valid"
    ITEM_UNAVAILABLE = "item-unavailable"
    EXPIRED = "expired"
    REQUIRES_RECIPIENT = "requires-recipient"


class PaymentStatus(StrEnum):
    REQUIRES_QUOTE = "requires-quote"
    REQUIRES_CRYPTO_PAYER_ADDRESS = "requires-crypto-payer-address"
    REQUIRES_EMAIL = "requires-email"
    CRYPTO_PAYER_INSUFFICIENT_FUNDS = "crypto-payer-insufficient-funds"
    AWAITING_PAYMENT = "awaiting-payment"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"


class PaymentState(StrEnum):
    """The payment state recorded on the order."""

    UNPAID = "unpaid"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"


class DeliveryStatus(StrEnum):
    AWAITING_PAYMENT = "awaiting-payment"
    IN_PROGRESS = "in-progress"
    COMPLETED = "completed"
    FAILED = "failed"
