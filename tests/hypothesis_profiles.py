"""How hard the model-based tests try: bounded and fast by default (``make test``), much
longer with ``DUST_HYPOTHESIS_PROFILE=long`` (e.g. before a release, or overnight)."""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

PROFILE = os.environ.get("DUST_HYPOTHESIS_PROFILE", "default")
if PROFILE not in ("default", "long"):
    raise RuntimeError(f"DUST_HYPOTHESIS_PROFILE must be default or long, got {PROFILE!r}")
LONG = PROFILE == "long"


def bounded(examples: int, long_examples: int, **extra: object) -> settings:
    """Hypothesis settings: ``examples`` normally, ``long_examples`` under the long profile;
    never a per-example deadline (a database round trip is not a regression)."""
    return settings(
        max_examples=long_examples if LONG else examples,
        deadline=None,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
        ],
        **extra,  # type: ignore[arg-type]
    )
