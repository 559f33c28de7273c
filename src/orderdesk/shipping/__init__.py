"""Packages, tracking events, the status vocabulary and carrier adapters."""
