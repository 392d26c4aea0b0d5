"""The dashboard, alerts and log-based metric refer only to what the server and startup script
actually emit: a renamed metric or label breaks this test, not the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from prometheus_client import Counter, Gauge, Histogram

from serve.obs.metrics import Metrics
from tests.serve.obs.test_gpu_metrics import FakeNvml
from tests.terraform.test_terraform import config, resources

TF = Path(__file__).resolve().parents[2] / "terraform"
METRIC = re.compile(r"\b((?:videogen|process)_[a-z0-9_]+)")
SELECTOR = re.compile(r"\b(videogen_[a-z0-9_]+)\{([^}]*)\}")
BY = re.compile(r"\bby \(([^)]*)\)")
# Labels that Managed Service for Prometheus and the queries add themselves.
EXTERNAL_LABELS = {"instance", "le", "state", "subscription_id", "job"}


def _exported() -> tuple[set[str], set[str]]:
    """Every series name the server can export, and every label name it uses."""
    metrics = Metrics(nvml=FakeNvml())
    names: set[str] = set()
    for family in metrics.registry.collect():
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"], "gauge": [""]}
        names |= {family.name + suffix for suffix in suffixes.get(family.type, [""])}
    labels = {"gpu", "name"}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            labels |= set(value._labelnames)
    return names, labels


def _dashboard() -> dict[str, Any]:
    text = (TF / "dashboard.json").read_text()
    for placeholder, value in (("name", "videogen"), ("subscription", "jobs"), ("boot_metric", "boot")):
        text = text.replace("${" + placeholder + "}", value)
    assert "${" not in text, "dashboard.json uses a template variable monitoring.tf does not pass"
    return dict(json.loads(text))


def _queries() -> list[str]:
    tiles = _dashboard()["mosaicLayout"]["tiles"]
    queries = [q["timeSeriesQuery"]["prometheusQuery"] for t in tiles for q in t["widget"]["xyChart"]["dataSets"]]
    monitoring = (TF / "monitoring.tf").read_text()
    return queries + re.findall(r'query\s*=\s*"(.*)"\n', monitoring)


def test_dashboard_parses_and_every_tile_has_a_query() -> None:
    tiles = _dashboard()["mosaicLayout"]["tiles"]
    assert len(tiles) >= 12
    for tile in tiles:
        data_sets = tile["widget"]["xyChart"]["dataSets"]
        assert tile["widget"]["title"] and data_sets
        assert all(d["timeSeriesQuery"]["prometheusQuery"].strip() for d in data_sets)
    titles = " ".join(t["widget"]["title"].lower() for t in tiles)
    for topic in ("requests", "videos", "queue", "p50", "stage", "errors", "gpu utilisation", "gpu memory", "boot"):
        assert topic in titles, topic


def test_every_metric_and_label_in_queries_is_exported_by_the_server() -> None:
    names, labels = _exported()
    queries = _queries()
    assert len(queries) >= 20
    used = {m for q in queries for m in METRIC.findall(q)}
    assert used and used <= names, f"not exported by the server: {sorted(used - names)}"
    for query in queries:
        for _, selector in SELECTOR.findall(query):
            keys = {part.split("=")[0].strip(" !~") for part in selector.split(",") if part.strip()}
            assert keys <= labels | EXTERNAL_LABELS, (query, keys - labels)
        for group in BY.findall(query):
            keys = {k.strip() for k in group.split(",")}
            assert keys <= labels | EXTERNAL_LABELS, (query, keys - labels)


def test_alert_thresholds_come_from_validated_variables() -> None:
    monitoring = (TF / "monitoring.tf").read_text()
    used = set(re.findall(r"var\.(alert_[a-z_]+)", monitoring))
    expected = {"alert_error_ratio", "alert_latency_sla_seconds", "alert_backlog_threshold", "alert_restarts_per_hour"}
    assert expected <= used
    variables = config()["variable"]
    for name in used:
        assert variables[name].get("validation"), f"{name} has no validation"
    assert "alerts" in resources("google_monitoring_alert_policy")
    assert resources("google_monitoring_uptime_check_config")["health"]["http_check"][0]["path"] == "/health"


def test_boot_stage_metric_reads_the_startup_script_lines() -> None:
    metric = resources("google_logging_metric")["startup_stages"]
    line = "startup stage=pull_weights result=cached seconds=0.6 bytes=591065 source=gs://w/ltx-video/r/"
    script = (TF.parent / "startup" / "startup.sh").read_text()
    assert 'log "stage=$1 result=${RESULT} seconds=$(seconds_since' in script  # the format parsed here
    value = re.search(r'REGEXP_EXTRACT\([^,]+, \\"(.*)\\"\)', metric["value_extractor"])
    assert value and re.search(value[1].replace("\\\\", "\\"), line)[1] == "0.6"  # type: ignore[index]
    for label, expected in (("stage", "pull_weights"), ("result", "cached")):
        pattern = re.search(r'\\"(.*)\\"', metric["label_extractors"][label])
        assert pattern and re.search(pattern[1].replace("\\\\", "\\"), line)[1] == expected  # type: ignore[index]
