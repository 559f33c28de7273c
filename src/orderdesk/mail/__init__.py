"""Refund emails: message building from templates, SMTP and file backends, the job."""
