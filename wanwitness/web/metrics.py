"""Prometheus metrics at /metrics on the web listener (prometheus_client).

Two sources:

- The store, read at scrape time by `StoreMetrics` (a custom collector), so what it
  has the truth of survives a restart of the collector: records in the ledger per
  agent, outages and their seconds by class, resets, and each agent's line state, last
  contact and the health fields of its newest heartbeat. Records are counted from the
  ledger incrementally (only rows past the last position seen are read); an agent's
  outages are derived again only when something new was heard from it or it fell
  silent (the key of its cache), never written to the store by a scrape.
- This process (`IngestMetrics`, collector/ingest.py): the commit time histogram and
  the quarantined messages by reason.

Outages as counters. `wanwitness_outages_total` counts an outage once it has ended
(as `wanwitness outages` lists it); an outage cut short only because its agent fell
silent is not ended yet, it may go on when the agent is heard again.
`wanwitness_outage_seconds_total` adds the seconds of every outage, an ongoing one (or
one cut short by silence) up to the last thing its agent was heard to say: the time
witnessed down, growing with each heartbeat, never time nobody saw. An unknown span
counts once it ended (while it goes on, the agent's records may yet fill it). The
timeline is a reading of the evidence and later records may revise it (a retracted
outage, a refined clock); a counter that went down would be read by Prometheus as a
reset, so while the collector runs no series goes below what it showed before.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Metric,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from wanwitness import __version__
from wanwitness import store as s
from wanwitness.collector import timeline
from wanwitness.collector.ingest import IngestMetrics
from wanwitness.web.data import LINE_STATES, OUTAGE_CLASSES, line_state

log = logging.getLogger("wanwitness.web")

# `<name>_created` series next to every counter are noise on a dashboard.
disable_created_metrics()

# The reset causes an agent names in its boot record (docs/protocol.md, Records);
# anything else is counted as `other`, so an agent cannot make up label values.
RESET_CAUSES = ("PWRON_RESET", "HARD_RESET", "WDT_RESET", "DEEPSLEEP_RESET", "SOFT_RESET",
                "BROWNOUT_RESET", "UNKNOWN")


@dataclass
class _Timeline:
    key: tuple[Any, ...]           # what it was derived from (see _derive)
    spans: list[timeline.Outage]
    coverage: dict[int, int]       # boot -> UTC ms of the last thing heard from it


def outage_totals(spans: list[timeline.Outage],
                  coverage: dict[int, int]) -> dict[str, tuple[int, float]]:
    """Per class: (outages ended, seconds witnessed), by the rules in this module's doc."""
    out = {cls: (0, 0.0) for cls in OUTAGE_CLASSES}
    for o in spans:
        if o.end_ms is None:
            if o.cls == timeline.UNKNOWN:
                continue
            end, ended = coverage.get(o.evidence.get("boot", -1), o.start_ms), False
        else:
            end, ended = o.end_ms, o.evidence.get("end") != timeline.END_SILENT
        n, seconds = out.get(o.cls, (0, 0.0))
        out[o.cls] = (n + int(ended), seconds + max(0, end - o.start_ms) / 1000)
    return out


class StoreMetrics(Collector):
    """The metrics whose truth is in the store, computed when Prometheus scrapes."""

    def __init__(self, store: s.Store, now_ms: Callable[[], int] = s.now_ms) -> None:
        self.store = store
        self.now_ms = now_ms
        self._lock = threading.Lock()
        self._records: dict[str, int] = {}
        self._timelines: dict[str, _Timeline] = {}
        self._shown: dict[tuple[str, ...], float] = {}

    def collect(self) -> Iterable[Metric]:
        with self._lock:
            return self._collect()

    # -- reading the store --------------------------------------------------------

    def _count_records(self, conn: sa.Connection) -> dict[str, int]:
        """Records per agent: the length of its chain (its head's link number)."""
        A = s.agents
        self._records = {agent: int(n) for agent, n in
                         conn.execute(sa.select(A.c.id, A.c.chain_n).where(A.c.chain_n > 0))}
        return self._records

    def _timeline(self, agent: str, hb_s: int, last_recv_ms: int | None, records: int,
                  now: int) -> _Timeline:
        """The agent's outages, derived again only when its inputs changed: a message
        heard (last contact), a record stored, the heartbeat period, or silence."""
        silent = last_recv_ms is not None and now - last_recv_ms > timeline.UNKNOWN_AFTER_HB * hb_s * 1000
        key = (last_recv_ms, records, hb_s, silent)
        cached = self._timelines.get(agent)
        if cached is not None and cached.key == key:
            return cached
        coverage: dict[int, int] = {}
        notes: list[str] = []
        try:
            spans = timeline.derive(self.store, agent, now_ms=now, notes=notes, coverage=coverage)
        except (ArithmeticError, ValueError, KeyError, TypeError) as e:
            # Stored data the timeline cannot read (as `rebuild` treats it): no outages.
            log.debug("metrics: agent %r: no outages computed: %s: %s", agent, type(e).__name__, e)
            spans = []
        for note in notes:
            log.debug("metrics: %s", note)
        self._timelines[agent] = cached = _Timeline(key, spans, coverage)
        return cached

    def _counter(self, name: str, labels: tuple[str, ...], value: float) -> float:
        """Never below what this process showed for the series before (see the module doc)."""
        key = (name, *labels)
        shown = max(self._shown.get(key, 0.0), value)
        self._shown[key] = shown
        return shown

    # -- the metrics --------------------------------------------------------------

    def _collect(self) -> list[Metric]:
        now = self.now_ms()
        A, B = s.agents, s.boots
        with self.store.engine.connect() as conn:
            agents = conn.execute(sa.select(A.c.id, A.c.hb_s, A.c.last_recv_ms, A.c.last_hb)
                                  .order_by(A.c.id)).all()
            records = dict(self._count_records(conn))
            resets: dict[tuple[str, str], int] = {}
            for agent, reset, n in conn.execute(sa.select(B.c.agent, B.c.reset, sa.func.count())
                                                .group_by(B.c.agent, B.c.reset)):
                cause = "UNKNOWN" if reset is None else reset if reset in RESET_CAUSES else "other"
                resets[(agent, cause)] = resets.get((agent, cause), 0) + int(n)

        recs = CounterMetricFamily("wanwitness_records_ingested", "Records stored in the ledger, "
                                   "per agent", labels=["agent"])
        outages = CounterMetricFamily("wanwitness_outages", "Outages (and unknown spans) that "
                                      "ended, per agent and class", labels=["agent", "class"])
        seconds = CounterMetricFamily("wanwitness_outage_seconds", "Seconds of outages (and "
                                      "unknown spans) per agent and class; an ongoing outage up "
                                      "to its agent's last word", labels=["agent", "class"])
        state = GaugeMetricFamily("wanwitness_agent_line_state", "1 for the agent's line state "
                                  "now, 0 for the others", labels=["agent", "state"])
        since = GaugeMetricFamily("wanwitness_agent_line_state_since_timestamp_seconds",
                                  "Since when the line state holds (unix time; none before the "
                                  "agent's first outage)", labels=["agent"])
        seen = GaugeMetricFamily("wanwitness_agent_last_seen_timestamp_seconds", "When the "
                                 "collector last heard from the agent (unix time)", labels=["agent"])
        heap = GaugeMetricFamily("wanwitness_agent_heap_free_bytes", "Free heap on the board, "
                                 "from its newest heartbeat", labels=["agent"])
        rssi = GaugeMetricFamily("wanwitness_agent_wifi_rssi_dbm", "Wi-Fi signal of the board "
                                 "(dBm), from its newest heartbeat", labels=["agent"])
        outbox = GaugeMetricFamily("wanwitness_agent_outbox_records", "Records on the board not "
                                   "yet acknowledged, from its newest heartbeat", labels=["agent"])
        boots = CounterMetricFamily("wanwitness_agent_resets", "Boots of the agent heard by "
                                    "the collector, by the reset cause its boot record names "
                                    "(the first start too: PWRON_RESET)", labels=["agent", "cause"])

        for r in agents:
            agent = r.id
            n = records.get(agent, 0)
            recs.add_metric([agent], self._counter("records", (agent,), n))
            tl = self._timeline(agent, r.hb_s, r.last_recv_ms, n, now)
            for cls, (count, secs) in outage_totals(tl.spans, tl.coverage).items():
                outages.add_metric([agent, cls], self._counter("outages", (agent, cls), count))
                seconds.add_metric([agent, cls], self._counter("seconds", (agent, cls), secs))
            now_state, now_since = line_state(tl.spans, r.last_recv_ms)
            for st in LINE_STATES:
                state.add_metric([agent, st], 1.0 if st == now_state else 0.0)
            if now_since is not None:
                since.add_metric([agent], now_since / 1000)
            if r.last_recv_ms is not None:
                seen.add_metric([agent], r.last_recv_ms / 1000)
            health = _health(r.last_hb)
            for family, field in ((heap, "heap"), (rssi, "rssi"), (outbox, "q")):
                value = health.get(field)
                if isinstance(value, int) and not isinstance(value, bool):
                    family.add_metric([agent], value)
        for (agent, cause), n in sorted(resets.items()):
            boots.add_metric([agent, cause], self._counter("resets", (agent, cause), n))
        return [recs, outages, seconds, state, since, seen, heap, rssi, outbox, boots]


def _health(last_hb: str | None) -> dict[str, Any]:
    try:
        doc = json.loads(last_hb) if last_hb else {}
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


class BuildInfo(Collector):
    def collect(self) -> Iterable[Metric]:
        return [InfoMetricFamily("wanwitness_build", "The collector's version",
                                 value={"version": __version__})]


def registry(store: s.Store, *, now_ms: Callable[[], int] = s.now_ms,
             ingest: IngestMetrics | None = None) -> CollectorRegistry:
    """Everything /metrics shows: the store's metrics, this process's ingest (when it
    ingests), the build, and prometheus_client's process, platform and GC metrics."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(StoreMetrics(store, now_ms))
    if ingest is not None:
        reg.register(ingest)
    reg.register(BuildInfo())
    # Their own instances (the default registry holds the library's global ones).
    ProcessCollector(registry=reg)
    PlatformCollector(registry=reg)
    GCCollector(registry=reg)
    return reg
