"""Chains, payment verification, payouts and the embedded devnet."""
