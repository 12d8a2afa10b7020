"""Thin Celery tasks: they own the transaction boundary and retries, nothing else.

Task names are a wire format (CONTRACT §3, §4): renaming one strands queued messages.
"""
