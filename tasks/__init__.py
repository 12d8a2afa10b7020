"""Thin Celery tasks: they own the transaction boundary and retries, nothing else.

Task names are a wire format (docs/CONTRACT.md §3.1, §5): renaming one strands queued messages.
"""
