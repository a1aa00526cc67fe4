"""Series as Redis stores them, and Prometheus metric families built from their sums.

A series is a name and its labels (``iii_invocations_total`` with ``function`` and
``status``). In the hash ``Keys.metrics`` each series is one field, written as compact JSON
``["name", [["label", "value"], ...]]`` (unambiguous whatever a function id holds), whose
value is the cluster's running total. A histogram is three kinds of series: ``_bucket``
(one per ``le``, holding the values that fell in that bucket alone), ``_sum`` and
``_count``; :func:`families` makes the buckets cumulative, as Prometheus wants them.

A gauge a process registers (``METRICS.gauge_source``) is named like a Prometheus series:
``iii_stream_connections`` or ``iii_worker_slots{state="busy"}``.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.utils import floatToGoString

from ....observe import DURATION_BUCKETS, Labels

Series = tuple[str, Labels]

HELP: dict[str, str] = {
    "iii_invocations_total": "Invocations run (each attempt of a queued job), by function and "
                             "outcome",
    "iii_invocation_duration_seconds": "How long invocations ran, by function",
    "iii_invocation_errors_total": "Invocations that failed, by function and error code",
    "iii_queued_to_started_seconds": "How long a queued job waited before its first attempt "
                                     "started, by queue",
    "iii_retries_total": "Failed attempts of queued jobs that were retried, by queue",
    "iii_cron_fires_total": "Cron schedules fired, by function and outcome",
    "iii_cron_skipped_total": "Cron fires skipped, by function and reason",
    "iii_queue_depth": "Jobs waiting to run, by queue",
    "iii_queue_dead_letters": "Dead letters held now, by queue",
    "iii_workers_live": "Worker processes alive in the registry",
    "iii_worker_slots": "Handler slots of live workers, busy or idle",
    "iii_stream_connections": "WebSocket connections open on stream processes",
}

_GAUGE_NAME = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?")
_GAUGE_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"\s*,?')


def field_of(series: Series) -> str:
    """The hash field of ``series``."""
    name, labels = series
    return json.dumps([name, [list(pair) for pair in labels]], separators=(",", ":"))


def series_of(field: str) -> Series | None:
    """The series a hash field names; None for a field that is not one (left alone)."""
    try:
        name, labels = json.loads(field)
        return str(name), tuple((str(k), str(v)) for k, v in labels)
    except (ValueError, TypeError):
        return None


def gauge_series(text: str) -> Series | None:
    """``name`` or ``name{label="value",...}`` as a series; None when it is neither."""
    match = _GAUGE_NAME.fullmatch(text.strip())
    if match is None:
        return None
    name, inside = match.groups()
    labels = tuple(sorted(_GAUGE_LABEL.findall(inside or "")))
    return name, labels


def help_of(name: str) -> str:
    return HELP.get(name, name.replace("_", " "))


def families(counts: Mapping[Series, float], gauges: Mapping[Series, float]) -> list[Metric]:
    """Prometheus metric families of summed ``counts`` (counters ending ``_total``,
    histograms from their ``_bucket``/``_sum``/``_count`` series, anything else untyped)
    and ``gauges``."""
    histograms = {name[:-len("_bucket")] for name, labels in counts
                  if name.endswith("_bucket") and any(k == "le" for k, _ in labels)}
    hist: dict[str, dict[Labels, dict[str, Any]]] = defaultdict(dict)
    counters: dict[str, dict[Labels, float]] = defaultdict(dict)
    untyped: dict[str, dict[Labels, float]] = defaultdict(dict)
    for (name, labels), value in counts.items():
        base, part = _histogram_part(name, histograms)
        if base is not None:
            own = tuple(p for p in labels if p[0] != "le")
            entry = hist[base].setdefault(tuple(sorted(own)),
                                          {"buckets": defaultdict(float), "sum": 0.0})
            if part == "bucket":
                entry["buckets"][dict(labels)["le"]] += value
            elif part == "sum":
                entry["sum"] += value
        elif name.endswith("_total"):
            counters[name][labels] = counters[name].get(labels, 0.0) + value
        else:
            untyped[name][labels] = untyped[name].get(labels, 0.0) + value
    out: list[Metric] = []
    for name in sorted(counters):
        names = _label_names(counters[name])
        family = CounterMetricFamily(name, help_of(name), labels=names)
        for labels, value in sorted(counters[name].items()):
            family.add_metric(_values(labels, names), value)
        out.append(family)
    for base in sorted(hist):
        names = _label_names(hist[base])
        hfamily = HistogramMetricFamily(base, help_of(base), labels=names)
        for labels, entry in sorted(hist[base].items()):
            hfamily.add_metric(_values(labels, names), _cumulative(entry["buckets"]),
                               entry["sum"])
        out.append(hfamily)
    for name in sorted(untyped):
        names = _label_names(untyped[name])
        ufamily = Metric(name, help_of(name), "unknown")
        for labels, value in sorted(untyped[name].items()):
            ufamily.add_sample(name, dict(zip(names, _values(labels, names), strict=True)), value)
        out.append(ufamily)
    by_name: dict[str, dict[Labels, float]] = defaultdict(dict)
    for (name, labels), value in gauges.items():
        by_name[name][labels] = by_name[name].get(labels, 0.0) + value
    for name in sorted(by_name):
        names = _label_names(by_name[name])
        gfamily = GaugeMetricFamily(name, help_of(name), labels=names)
        for labels, value in sorted(by_name[name].items()):
            gfamily.add_metric(_values(labels, names), value)
        out.append(gfamily)
    return out


def _histogram_part(name: str, histograms: set[str]) -> tuple[str | None, str]:
    for part in ("bucket", "sum", "count"):
        suffix = f"_{part}"
        if name.endswith(suffix) and name[:-len(suffix)] in histograms:
            return name[:-len(suffix)], part
    return None, ""


def _cumulative(buckets: Mapping[str, float]) -> list[tuple[str, float]]:
    """Per-bucket counts (``le`` → values in that bucket alone) as Prometheus's cumulative
    buckets, every standard bound present and ``+Inf`` last."""
    per_bound: dict[float, float] = {float(b): 0.0 for b in DURATION_BUCKETS}
    for le, value in buckets.items():
        try:
            bound = float(le)
        except ValueError:
            continue
        per_bound[bound] = per_bound.get(bound, 0.0) + value
    per_bound.setdefault(math.inf, 0.0)
    out = []
    running = 0.0
    for bound in sorted(per_bound):
        running += per_bound[bound]
        out.append((floatToGoString(bound), running))
    return out


def _label_names(samples: Iterable[Labels]) -> list[str]:
    return sorted({k for labels in samples for k, _ in labels})


def _values(labels: Labels, names: list[str]) -> list[str]:
    given = dict(labels)
    return [given.get(n, "") for n in names]
