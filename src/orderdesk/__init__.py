"""orderdesk: order management for headless checkout paid in stablecoins."""

__version__ = "0.1.0"
