"""The alert rules and the dashboard in ``docs/operations/`` speak of metrics the worker
serves, and every alert says what to do. ``promtool check rules`` runs too when promtool
is installed (on PATH, or ``DUST_PROMTOOL``)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

OPS = Path(__file__).resolve().parents[1] / "docs" / "operations"
METRIC = re.compile(r"\b(dust_[a-z_]+)")


def served() -> set[str]:
    """Every sample name the worker's metrics can have."""
    from prometheus_client import REGISTRY

    from dust.worker import metrics

    names = set(metrics.SAMPLED)
    for family in REGISTRY.collect():
        if not family.name.startswith("dust_"):
            continue
        if family.type == "counter":
            names |= {f"{family.name}_total"}
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "count", "sum")}
        else:
            names.add(family.name)
    return names


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load((OPS / "alerts.yml").read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_alert_rules_speak_of_served_metrics_and_say_what_to_do() -> None:
    known = served()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line[4:].strip().lower()).replace(" ", "-")
        for line in (OPS / "README.md").read_text().splitlines()
        if line.startswith("### ")
    }
    names = set()
    for rule in rules():
        names.add(rule["alert"])
        used = set(METRIC.findall(rule["expr"]))
        assert used <= known, (rule["alert"], used - known)
        assert used or "up{" in rule["expr"], rule["alert"]
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"], rule["alert"]
        anchor = notes["runbook"].split("#", 1)[1]
        assert anchor in anchors, (rule["alert"], anchor, anchors)
        assert rule["labels"]["severity"] in ("warning", "critical")
    # what must be watched: undone events, reconciliation, lag, jobs, the workers
    assert {
        "DustEventsNeedAttention",
        "DustEventsFailed",
        "DustReconciliationNotOk",
        "DustEventLagHigh",
        "DustHoldExpiryNotRunning",
        "DustLotExpiryNotRunning",
        "DustReconcileNotRunning",
        "DustWorkerDown",
    } <= names


def test_promtool_checks_the_rules() -> None:
    promtool = os.environ.get("DUST_PROMTOOL") or shutil.which("promtool")
    if promtool is None:
        message = "promtool not installed (the rules are still parsed and checked above)"
        if os.environ.get("CI") == "true":  # .ci/run provides it
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    done = subprocess.run(
        [promtool, "check", "rules", str(OPS / "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_dashboard_queries_served_metrics() -> None:
    known = served()
    dashboard = json.loads((OPS / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 10
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used <= known, used - known
    wanted = {"dust_events_total", "dust_event_lag_seconds_bucket", "dust_queue_messages"}
    assert wanted <= used
