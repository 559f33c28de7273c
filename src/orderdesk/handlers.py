"""Import every module that registers job handlers."""

import orderdesk.mail.handlers  # noqa: F401 - refund emails
import orderdesk.payments.handlers  # noqa: F401 - payment re-checks
import orderdesk.refunds.handlers  # noqa: F401 - return labels and payouts
import orderdesk.shipping.handlers  # noqa: F401 - fulfilment jobs
import orderdesk.webhooks.handlers  # noqa: F401 - webhook deliveries
