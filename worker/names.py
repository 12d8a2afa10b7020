"""The public names and limits of Dust's contract (docs/CONTRACT.md), written once.

The tasks register under these names, the Celery app routes them, and the CLI sends them
without importing the tasks; the limits are what both the CLI and the tasks accept.
"""

from __future__ import annotations

# -- task names (docs/CONTRACT.md, "Tasks") ---------------------------------------------

HANDLE_EVENT = "dust.handle_event"
NOOP = "dust.noop"

RESERVE = "dust.reserve"
RELEASE = "dust.release"
BALANCE = "dust.balance"
HISTORY = "dust.history"
ORDER_REFUNDS = "dust.order_refunds"
OVERVIEW = "dust.overview"

ADJUST = "dust.admin.adjust"
CLAIM = "dust.admin.claim"
SET_PRODUCT = "dust.admin.set_product"
REPLAY = "dust.admin.replay"
RESOLVE = "dust.admin.resolve"
BACKFILL_BATCH = "dust.admin.backfill_batch"

#: The scheduled jobs and the task each one runs as.
JOBS = {
    "expire_holds": "dust.expire_holds",
    "expire_lots": "dust.expire_lots",
    "reconcile": "dust.reconcile",
}

# -- queues -----------------------------------------------------------------------------

EVENTS_QUEUE = "dust.events"
REQUESTS_QUEUE = "dust.requests"
JOBS_QUEUE = "dust.jobs"

# -- limits -----------------------------------------------------------------------------

#: Largest amount (dust, or minor units of store credit) an event, a request or an
#: adjustment accepts: far above any real order, far below BIGINT.
MAX_AMOUNT = 10**15

#: The statuses ``dust events replay`` (``dust.admin.replay``) takes an event from.
REPLAYABLE = ("failed", "needs_attention")

#: Longest id (customer, product, group, ...) an event, a request or a command accepts.
MAX_ID = 200
#: Longest actor (who did it) and reason (why) of an operator's change.
MAX_ACTOR = 200
MAX_REASON = 2000
#: Longest idempotency key of an adjustment.
MAX_KEY = 250
