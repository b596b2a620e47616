"""Peers: today's monitoring tools, each reduced to its documented default policy.

Each peer is a small prober that polls like the tool does by default (interval,
probes per poll, timeouts) and decides outages by the tool's own rule, so the lab can
score it against the same ground truth as our agent. Where each number comes from is
in the peer's `source` and in bench/README.md ("Peers").

A peer does not probe by itself. `run_poll` carries out the peer's `probe_plan()` with
a *prober* (one ICMP echo or TCP connect per call) and hands the result to `observe()`;
`run_peer` repeats that on the tool's schedule. `simulate` runs the same plans on a
virtual clock against a scripted link, which is how tests/test_lab_peers.py checks the
decision rules without a network or any sleeping.

    python -m bench.lab.peers --targets 198.51.100.7,203.0.113.9 --duration 600 --json OUT

runs every peer side by side (the lab starts it inside the agent's namespace with
`ip netns exec`) and writes each peer's outages, in ISO UTC, at the end or on SIGTERM.
It sends packets only to the targets given, which must be RFC 5737 or loopback
addresses.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import math
import os
import re
import signal
import socket
import struct
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wanwitness.collector.timeline import iso

# (kind, target, timeout_s, port) -> round-trip ms, or None when nothing came back in time
ProbeFn = Callable[[str, str, float, "int | None"], Awaitable["float | None"]]
Outage = tuple[int, "int | None"]


# --- one poll ---------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    target: str
    sent_ms: int            # offset from the start of its poll
    rtt_ms: float | None    # None: no reply (or no connection) within the probe's timeout

    @property
    def ok(self) -> bool:
        return self.rtt_ms is not None


@dataclass(frozen=True)
class Poll:
    probes: tuple[Probe, ...]
    duration_ms: int        # start of the poll to its last answer or timeout

    @classmethod
    def single(cls, target: str, rtts: Sequence[float | None], duration_ms: int,
               spacing_ms: int = 1000) -> Poll:
        """A poll of one target; handy in tests: Poll.single("x", [None, 20.0], 2020)."""
        return cls(tuple(Probe(target, i * spacing_ms, r) for i, r in enumerate(rtts)),
                   duration_ms)

    def replies(self, target: str | None = None) -> int:
        return sum(1 for p in self.probes if p.ok and (target is None or p.target == target))

    def sent(self, target: str | None = None) -> int:
        return sum(1 for p in self.probes if target is None or p.target == target)


def plan(kind: str, targets: Sequence[str], count: int, timeout_s: float, *,
         spacing_s: float = 1.0, sequential: bool = False, deadline_s: float | None = None,
         replies_needed: int | None = None, port: int | None = None) -> dict[str, Any]:
    """What one poll does.

    count           most probes sent to each target
    spacing_s       between two sends to one target
    timeout_s       how long each probe waits for its answer
    sequential      the next send waits for the previous answer or timeout (icmplib);
                    otherwise sends are paced by spacing_s alone (ping, fping)
    deadline_s      the poll ends here whatever is outstanding; until then every probe
                    may still be answered (iputils `ping -w`)
    replies_needed  the poll stops once this many answers are in (`ping -c N -w D`)
    """
    return {"kind": kind, "targets": list(targets), "count": count, "timeout_s": timeout_s,
            "spacing_s": spacing_s, "sequential": sequential, "deadline_s": deadline_s,
            "replies_needed": replies_needed, "port": port}


def _probe_wait(p: dict[str, Any], sent_s: float) -> float:
    # Under `ping -w` the deadline, not -W, bounds how long an answer may take.
    if p["deadline_s"] is not None:
        return max(0.0, p["deadline_s"] - sent_s)
    return p["timeout_s"]


async def run_poll(p: dict[str, Any], probe: ProbeFn) -> Poll:
    """Carry out one poll in real time with `probe`; targets are probed in parallel."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def one(target: str, offset_s: float) -> Probe:
        delay = t0 + offset_s - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        sent = loop.time() - t0
        rtt = await probe(p["kind"], target, _probe_wait(p, sent), p["port"])
        return Probe(target, round(sent * 1000), rtt)

    async def sequential(target: str) -> list[Probe]:
        out: list[Probe] = []
        for i in range(p["count"]):
            if i:
                await asyncio.sleep(p["spacing_s"])
            out.append(await one(target, loop.time() - t0))
        return out

    async def paced(target: str) -> list[Probe]:
        offsets = [i * p["spacing_s"] for i in range(p["count"])]
        if p["deadline_s"] is not None:
            offsets = [o for o in offsets if o < p["deadline_s"]]
        tasks = [asyncio.create_task(one(target, o)) for o in offsets]
        out: list[Probe] = []
        try:
            for fut in asyncio.as_completed(tasks):
                got = await fut
                out.append(got)
                if p["replies_needed"] and sum(x.ok for x in out) >= p["replies_needed"]:
                    break
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return sorted(out, key=lambda x: x.sent_ms)

    run = sequential if p["sequential"] else paced
    per_target = await asyncio.gather(*(run(t) for t in p["targets"]))
    probes = tuple(x for group in per_target for x in group)
    return Poll(probes, round((loop.time() - t0) * 1000))


def simulate_poll(p: dict[str, Any], t0_ms: int, delivered: Callable[[str, int], bool],
                  rtt_ms: float = 20.0) -> Poll:
    """The poll `run_poll` would see, on a virtual clock.

    delivered(target, t_ms) says whether a packet crossing the link at t_ms gets
    through; an echo counts when both the request (sent) and the reply (sent + rtt) do.
    """
    rtt = int(round(rtt_ms))
    probes: list[Probe] = []
    end = 0
    for target in p["targets"]:
        def answered(sent: int, wait_ms: int) -> bool:
            return (rtt <= wait_ms and delivered(target, t0_ms + sent)
                    and delivered(target, t0_ms + sent + rtt))

        if p["sequential"]:
            t = 0
            for i in range(p["count"]):
                if i:
                    t += int(p["spacing_s"] * 1000)
                wait = int(_probe_wait(p, t / 1000) * 1000)
                ok = answered(t, wait)
                probes.append(Probe(target, t, float(rtt) if ok else None))
                t += rtt if ok else wait
            end = max(end, t)
            continue
        finished: list[tuple[int, int, bool]] = []      # (answer or timeout at, sent, ok)
        for i in range(p["count"]):
            sent = int(i * p["spacing_s"] * 1000)
            if p["deadline_s"] is not None and sent >= p["deadline_s"] * 1000:
                break
            wait = int(_probe_wait(p, sent / 1000) * 1000)
            ok = answered(sent, wait)
            finished.append((sent + (rtt if ok else wait), sent, ok))
        finished.sort()
        got: list[Probe] = []
        stop = max((f[0] for f in finished), default=0)
        for at, sent, ok in finished:
            got.append(Probe(target, sent, float(rtt) if ok else None))
            if p["replies_needed"] and sum(x.ok for x in got) >= p["replies_needed"]:
                stop = at
                break
        probes.extend(sorted(got, key=lambda x: x.sent_ms))
        end = max(end, stop)
    return Poll(tuple(probes), end)


# --- the peers --------------------------------------------------------------------

class Peer:
    """One tool's default policy: how it polls (probe_plan) and how it decides (observe).

    outages() lists (start_ms, end_ms | None) as the tool reports them: start is the
    tool's own timestamp for the moment it declares the line down, end the one for
    declaring it up again (None while it still says down).
    """

    name = ""
    tool = ""
    interval_s = 0.0
    schedule = "fixed"      # "fixed": a poll starts every interval_s (missed slots skipped);
    #                          "after_end": interval_s after the previous poll ended
    source = ""
    policy = ""
    max_targets = 1         # single-host monitors watch the first target only

    def __init__(self, targets: Sequence[str] = ()) -> None:
        self.targets: list[str] = []
        self.polls = 0
        self._outages: list[list[int | None]] = []
        if targets:
            self.use_targets(targets)

    def use_targets(self, targets: Sequence[str]) -> None:
        if not targets:
            raise ValueError(f"{self.name}: no target to probe")
        self.targets = list(targets)[: self.max_targets]

    def first_poll_delay_s(self, wall_s: float) -> float:
        return 0.0

    def probe_plan(self) -> dict[str, Any]:
        raise NotImplementedError

    def observe(self, t_ms: int, poll: Poll) -> None:
        raise NotImplementedError

    def outages(self) -> list[Outage]:
        return [(int(s), e) for s, e in self._outages]  # type: ignore[arg-type]

    @property
    def is_down(self) -> bool:
        return bool(self._outages) and self._outages[-1][1] is None

    def _down(self, at_ms: int) -> None:
        if not self.is_down:
            self._outages.append([at_ms, None])

    def _up(self, at_ms: int) -> None:
        if self.is_down:
            self._outages[-1][1] = at_ms


class HomeAssistantPing(Peer):
    name = "home_assistant_ping"
    tool = "Home Assistant ping"
    interval_s = 30.0           # coordinator.py: update_interval=timedelta(seconds=30)
    schedule = "after_end"      # DataUpdateCoordinator re-arms its timer after a refresh ends
    COUNT = 5                   # const.py DEFAULT_PING_COUNT
    ICMP_TIMEOUT_S = 1.0        # const.py ICMP_TIMEOUT, passed to icmplib async_ping
    SEND_INTERVAL_S = 1.0       # icmplib async_ping(interval=1) default
    policy = ("ICMP, 5 echoes sent one after another (1 s timeout each, 1 s apart), "
              "every 30 s after the previous poll; off when no echo of a poll is answered")
    source = ("home-assistant/core homeassistant/components/ping/coordinator.py "
              "(update_interval 30 s), const.py (DEFAULT_PING_COUNT 5, ICMP_TIMEOUT 1), "
              "helpers.py (icmplib async_ping; is_alive), binary_sensor.py (is_on = "
              "is_alive); icmplib models.py (is_alive = packets_received > 0); "
              "helpers/update_coordinator.py (_schedule_refresh after the refresh)")

    def probe_plan(self) -> dict[str, Any]:
        return plan("icmp", self.targets, self.COUNT, self.ICMP_TIMEOUT_S,
                    spacing_s=self.SEND_INTERVAL_S, sequential=True)

    def observe(self, t_ms: int, poll: Poll) -> None:
        self.polls += 1
        # The entity's state (and its last_changed) is written when the refresh ends.
        at = t_ms + poll.duration_ms
        if poll.replies() > 0:      # any answer at all: is_alive
            self._up(at)
        else:
            self._down(at)


class UptimeKuma(Peer):
    name = "uptime_kuma"
    tool = "Uptime Kuma"
    interval_s = 60.0           # EditMonitor.vue monitorDefaults.interval
    schedule = "fixed"          # monitor.js: next beat at bean.time + interval
    MAX_RETRIES = 0             # EditMonitor.vue monitorDefaults.maxretries: DOWN on one failed beat
    PING_COUNT = 3              # EditMonitor.vue init(): ping_count
    PER_REQUEST_TIMEOUT_S = 2.0 # EditMonitor.vue init(): ping_per_request_timeout (ping -W)
    DEADLINE_S = 10.0           # EditMonitor.vue watch "monitor.type": ping timeout 10 (ping -w)
    policy = ("ICMP `ping -c 3 -W 2 -w 10` every 60 s: up only when 3 echoes are answered "
              "within 10 s (ping keeps sending 1/s until then); retries 0, so one failed "
              "beat is DOWN, the next good beat UP; stamped with the beat's start")
    source = ("louislam/uptime-kuma src/pages/EditMonitor.vue (interval 60, maxretries 0, "
              "ping_count 3, ping_per_request_timeout 2, ping timeout 10), "
              "server/model/monitor.js (bean.time at beat start; retries; next beat "
              "interval - elapsed), server/util-server.js ping() (ping -c -W -w, exit "
              "status); iputils ping(8) -w")

    def probe_plan(self) -> dict[str, Any]:
        return plan("icmp", self.targets, int(self.DEADLINE_S), self.PER_REQUEST_TIMEOUT_S,
                    spacing_s=1.0, deadline_s=self.DEADLINE_S,
                    replies_needed=self.PING_COUNT)

    def observe(self, t_ms: int, poll: Poll) -> None:
        self.polls += 1
        # ping exits 0 only with -c answers before the -w deadline; anything else throws,
        # and with maxretries 0 the beat goes straight to DOWN (no PENDING).
        if poll.replies() >= self.PING_COUNT:
            self._up(t_ms)
        else:
            self._down(t_ms)


class Gatus(Peer):
    name = "gatus"
    tool = "Gatus"
    interval_s = 60.0           # README endpoints[].interval default 60s
    schedule = "fixed"          # watchdog/endpoint.go: time.NewTicker(ep.Interval)
    TIMEOUT_S = 10.0            # client/config.go defaultTimeout, pinger.Timeout
    FAILURE_THRESHOLD = 3       # alerting/alert/alert.go ValidateAndSetDefaults
    SUCCESS_THRESHOLD = 2
    policy = ("ICMP, 1 echo (10 s timeout) every 60 s; the alert opens after 3 failed checks "
              "in a row and resolves after 2 good ones in a row")
    source = ("TwiN/gatus README (interval 60s, alerts[].failure-threshold 3, "
              "success-threshold 2, client timeout 10s), alerting/alert/alert.go "
              "(ValidateAndSetDefaults), watchdog/alerting.go (consecutive counters), "
              "client/client.go Ping (Count 1, Timeout = client timeout), "
              "watchdog/endpoint.go (ticker)")

    def __init__(self, targets: Sequence[str] = ()) -> None:
        super().__init__(targets)
        self.failures_in_a_row = 0
        self.successes_in_a_row = 0

    def probe_plan(self) -> dict[str, Any]:
        return plan("icmp", self.targets, 1, self.TIMEOUT_S)

    def observe(self, t_ms: int, poll: Poll) -> None:
        self.polls += 1
        at = t_ms + poll.duration_ms        # alerts are sent once the check has finished
        if poll.replies() > 0:
            self.successes_in_a_row += 1
            if self.is_down and self.successes_in_a_row >= self.SUCCESS_THRESHOLD:
                self._up(at)
            self.failures_in_a_row = 0
        else:
            self.successes_in_a_row = 0
            self.failures_in_a_row += 1
            if self.failures_in_a_row >= self.FAILURE_THRESHOLD:
                self._down(at)


class DocsightConnectionMonitor(Peer):
    name = "docsight"
    tool = "DOCSight connection monitor"
    interval_s = 5.0            # manifest.json connection_monitor_poll_interval_ms 5000
    schedule = "fixed"          # collector.py: a target is due when now - last >= interval
    PROBE_TIMEOUT_S = 2.0       # probe.py PROBE_TIMEOUT_S
    OUTAGE_THRESHOLD = 5        # manifest.json connection_monitor_outage_threshold
    TCP_PORT = 443              # manifest.json connection_monitor_tcp_port
    max_targets = 2             # collector.py seeds two public resolvers (Cloudflare, Google)
    policy = ("ICMP (TCP 443 without raw sockets), 1 probe per target every 5 s (2 s "
              "timeout); per target, 5 timeouts in a row are an outage dated from the "
              "first of them, ending at the first answered probe; targets are judged "
              "separately (their outages are merged here)")
    source = ("itsDNNS/docsight app/modules/connection_monitor/manifest.json (5000 ms, "
              "threshold 5, tcp 443), collector.py (default targets, parallel probes), "
              "probe.py (PROBE_TIMEOUT_S 2, ICMP or TCP), event_rules.py (per-target "
              "consecutive timeouts), storage.py get_outages (start = first timeout, "
              "end = first good sample)")

    def __init__(self, targets: Sequence[str] = (), method: str = "icmp") -> None:
        if method not in ("icmp", "tcp"):
            raise ValueError(f"docsight: probe method must be icmp or tcp, not {method!r}")
        self.method = method
        self._run: dict[str, list[int]] = {}                # target -> [run start, run length]
        self._per_target: dict[str, list[list[int | None]]] = {}
        super().__init__(targets)

    def probe_plan(self) -> dict[str, Any]:
        port = self.TCP_PORT if self.method == "tcp" else None
        return plan(self.method, self.targets, 1, self.PROBE_TIMEOUT_S, port=port)

    def observe(self, t_ms: int, poll: Poll) -> None:
        self.polls += 1
        for target in self.targets:
            if poll.sent(target) == 0:
                continue
            run = self._run.setdefault(target, [t_ms, 0])
            found = self._per_target.setdefault(target, [])
            # Samples are stamped with the round's start (collector.py `now`).
            if poll.replies(target) == 0:
                if run[1] == 0:
                    run[0] = t_ms
                run[1] += 1
                if run[1] == self.OUTAGE_THRESHOLD:
                    found.append([run[0], None])
            else:
                if run[1] >= self.OUTAGE_THRESHOLD:
                    found[-1][1] = t_ms
                run[1] = 0

    def target_outages(self) -> dict[str, list[Outage]]:
        return {t: [(int(s), e) for s, e in v]  # type: ignore[arg-type]
                for t, v in self._per_target.items()}

    def outages(self) -> list[Outage]:
        # DOCSight judges every target on its own; an outage of either shows in its
        # outage list. Overlapping ones are merged into one here.
        spans = sorted((float(s or 0), math.inf if e is None else float(e))
                       for v in self._per_target.values() for s, e in v)
        merged: list[list[float]] = []
        for s, e in spans:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        return [(int(s), None if e == math.inf else int(e)) for s, e in merged]

    @property
    def is_down(self) -> bool:
        return any(v and v[-1][1] is None for v in self._per_target.values())


class SmokePing(Peer):
    name = "smokeping"
    tool = "SmokePing"
    interval_s = 300.0          # etc/config.dist: step = 300
    schedule = "fixed"          # a round every step, aligned to the clock
    PINGS = 20                  # etc/config.dist: pings = 20
    PERIOD_S = 1.0              # fping -p default 1000 ms (FPing.pm passes no -p)
    PING_TIMEOUT_S = 1.0        # fping per-ping timeout (assumed = period; lab RTTs are ms)
    policy = ("ICMP, fping -C 20 (1 s apart) every 300 s; alert `type = loss, pattern = "
              "==100%, edgetrigger = yes`: raised after a round with every ping lost, "
              "cleared after the next round with any answer")
    source = ("oetiker/SmokePing etc/config.dist.in (step 300, pings 20, shipped alert "
              "someloss only), lib/Smokeping.pm Alerts doc (pattern grammar, ==U, "
              "edgetrigger, checked after each round), lib/Smokeping/probes/FPing.pm "
              "(fping -C pings -B1 -r1); fping(8) -p")

    def first_poll_delay_s(self, wall_s: float) -> float:
        return (-wall_s) % self.interval_s       # rounds start on multiples of the step

    def probe_plan(self) -> dict[str, Any]:
        return plan("icmp", self.targets, self.PINGS, self.PING_TIMEOUT_S,
                    spacing_s=self.PERIOD_S)

    def observe(self, t_ms: int, poll: Poll) -> None:
        self.polls += 1
        at = t_ms + poll.duration_ms    # alerts are matched after the round of polling
        loss_pct = 100.0 * (1 - poll.replies() / max(1, poll.sent()))
        if loss_pct == 100.0:
            self._down(at)
        else:
            self._up(at)


PEERS: dict[str, type[Peer]] = {cls.name: cls for cls in (
    HomeAssistantPing, UptimeKuma, Gatus, DocsightConnectionMonitor, SmokePing)}


# --- running a peer ---------------------------------------------------------------

def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def _wait_or_stop(stop_event: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True when stop_event was set meanwhile."""
    if stop_event.is_set():
        return True
    if seconds <= 0:
        return False
    try:
        await asyncio.wait_for(stop_event.wait(), timeout=seconds)
        return True
    except TimeoutError:
        return False


async def run_peer(peer: Peer, targets: Sequence[str], stop_event: asyncio.Event,
                   prober: ProbeFn) -> None:
    """Poll on the tool's schedule until stop_event is set; a poll under way is dropped."""
    peer.use_targets(targets)
    loop = asyncio.get_running_loop()
    if await _wait_or_stop(stop_event, peer.first_poll_delay_s(time.time())):
        return
    while True:
        t_ms = _wall_ms()
        started = loop.time()
        poll_task = asyncio.ensure_future(run_poll(peer.probe_plan(), prober))
        stop_task = asyncio.ensure_future(stop_event.wait())
        await asyncio.wait({poll_task, stop_task}, return_when=asyncio.FIRST_COMPLETED)
        if not poll_task.done():
            poll_task.cancel()
            await asyncio.gather(poll_task, return_exceptions=True)
            return
        stop_task.cancel()
        await asyncio.gather(stop_task, return_exceptions=True)
        peer.observe(t_ms, poll_task.result())
        if peer.schedule == "after_end":
            next_at = loop.time() + peer.interval_s
        else:
            next_at = started + peer.interval_s
            while next_at <= loop.time():
                next_at += peer.interval_s
        if await _wait_or_stop(stop_event, next_at - loop.time()):
            return


def simulate(peer: Peer, *, cuts: Sequence[tuple[float, float]] = (), until_s: float,
             first_poll_s: float = 0.0, rtt_ms: float = 20.0,
             lost: Callable[[str, int], bool] | None = None,
             targets: Sequence[str] = ("198.51.100.7", "203.0.113.9")) -> list[Outage]:
    """Run `peer` on a virtual clock (ms from 0) and return its outages.

    The link drops every packet during each cut [start_s, end_s); `lost(target, t_ms)`
    can drop more. Polls follow the peer's schedule from first_poll_s on.
    """
    if not peer.targets:
        peer.use_targets(targets)

    def delivered(target: str, t_ms: int) -> bool:
        if any(a * 1000 <= t_ms < b * 1000 for a, b in cuts):
            return False
        return not (lost and lost(target, t_ms))

    interval = int(peer.interval_s * 1000)
    t = int(first_poll_s * 1000)
    while t < until_s * 1000:
        poll = simulate_poll(peer.probe_plan(), t, delivered, rtt_ms)
        peer.observe(t, poll)
        if peer.schedule == "after_end":
            t += poll.duration_ms + interval
        else:
            start, t = t, t + interval
            while t < start + poll.duration_ms:
                t += interval
    return peer.outages()


# --- the real prober --------------------------------------------------------------

ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY = 8, 0


def icmp_checksum(data: bytes) -> int:
    """RFC 1071 internet checksum."""
    if len(data) % 2:
        data += b"\x00"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def echo_request(ident: int, seq: int, payload: bytes = b"wanwitness-peer!") -> bytes:
    header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, ident, seq)
    csum = icmp_checksum(header + payload)
    return struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, csum, ident, seq) + payload


class NetProber:
    """ICMP echo and TCP connect, one probe per call, for `run_poll`.

    ICMP uses a raw socket when allowed (root), else a Linux ping socket
    (SOCK_DGRAM/IPPROTO_ICMP), else one `ping -c 1 -W T` per probe. TCP is a plain
    connect; a refused connection counts as a failure, as in the tools. Only the
    addresses in `allowed` are ever probed.
    """

    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = frozenset(allowed)
        self.icmp_mode = ""
        self._sock: socket.socket | None = None
        self._ident = os.getpid() & 0xFFFF
        self._seq = 0
        self._pending: dict[tuple[str, int], asyncio.Future[float]] = {}

    async def __call__(self, kind: str, target: str, timeout_s: float,
                       port: int | None = None) -> float | None:
        if target not in self.allowed:
            raise ValueError(f"{target} is not one of the targets this prober may reach")
        if kind == "icmp":
            return await self.icmp(target, timeout_s)
        if kind == "tcp":
            if port is None:
                raise ValueError("a TCP probe needs a port")
            return await self.tcp(target, port, timeout_s)
        raise ValueError(f"unknown probe kind {kind!r}")

    async def tcp(self, target: str, port: int, timeout_s: float) -> float | None:
        start = time.monotonic()
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(target, port), timeout_s)
        except (TimeoutError, OSError):
            return None
        rtt = (time.monotonic() - start) * 1000
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return rtt

    def _open_icmp(self) -> None:
        for mode, kind in (("raw", socket.SOCK_RAW), ("dgram", socket.SOCK_DGRAM)):
            try:
                sock = socket.socket(socket.AF_INET, kind, socket.IPPROTO_ICMP)
            except OSError:
                continue
            sock.setblocking(False)
            asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)
            self._sock, self.icmp_mode = sock, mode
            return
        self.icmp_mode = "subprocess"

    def _on_readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data, addr = self._sock.recvfrom(4096)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            if self.icmp_mode == "raw":         # a raw socket hands over the IPv4 header
                data = data[(data[0] & 0x0F) * 4:] if data else b""
            if len(data) < 8:
                continue
            kind, _, _, ident, seq = struct.unpack("!BBHHH", data[:8])
            # A raw socket sees every ICMP packet (our own requests on loopback too);
            # a ping socket's identifier is the kernel's, so only raw checks it.
            if kind != ICMP_ECHO_REPLY or (self.icmp_mode == "raw" and ident != self._ident):
                continue
            fut = self._pending.get((addr[0], seq))
            if fut is not None and not fut.done():
                fut.set_result(time.monotonic())

    async def icmp(self, target: str, timeout_s: float) -> float | None:
        if not self.icmp_mode:
            self._open_icmp()
        if self.icmp_mode == "subprocess":
            return await self._icmp_subprocess(target, timeout_s)
        assert self._sock is not None
        self._seq = (self._seq + 1) & 0xFFFF
        key = (target, self._seq)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pending[key] = fut
        start = time.monotonic()
        try:
            self._sock.sendto(echo_request(self._ident, self._seq), (target, 0))
            replied = await asyncio.wait_for(fut, timeout_s)
            return (replied - start) * 1000
        except (TimeoutError, OSError):
            return None
        finally:
            self._pending.pop(key, None)

    async def _icmp_subprocess(self, target: str, timeout_s: float) -> float | None:
        wait = max(1, math.ceil(timeout_s))
        proc = await asyncio.create_subprocess_exec(
            "ping", "-n", "-c", "1", "-W", str(wait), target,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), wait + 1)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return None
        m = re.search(rb"time[=<]\s*([\d.]+)\s*ms", out)
        if proc.returncode != 0 or not m:
            return None
        return float(m.group(1))

    def close(self) -> None:
        if self._sock is not None:
            try:
                asyncio.get_running_loop().remove_reader(self._sock.fileno())
            except RuntimeError:
                pass
            self._sock.close()
            self._sock = None
        self.icmp_mode = ""


def raw_icmp_available() -> bool:
    try:
        socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP).close()
        return True
    except OSError:
        return False


# --- command line -----------------------------------------------------------------

LAB_NETS = [ipaddress.ip_network(n) for n in
            ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "127.0.0.0/8")]


def parse_targets(text: str) -> list[str]:
    """Comma-separated IPv4 literals, each in an RFC 5737 block or loopback."""
    targets = [t.strip() for t in text.split(",") if t.strip()]
    if not targets:
        raise ValueError("--targets: give at least one address")
    for t in targets:
        try:
            addr = ipaddress.IPv4Address(t)
        except ValueError:
            raise ValueError(f"--targets: {t!r} is not an IPv4 address (names are not "
                             "resolved, to keep all traffic on the lab)") from None
        if not any(addr in net for net in LAB_NETS):
            raise ValueError(f"--targets: {t} is outside the lab; use RFC 5737 addresses "
                             "(192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) or loopback")
    return targets


def make_peers(names: str | None) -> list[Peer]:
    chosen = list(PEERS) if not names else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in chosen if n not in PEERS]
    if unknown:
        raise ValueError(f"--peers: unknown {', '.join(unknown)}; known: {', '.join(PEERS)}")
    peers: list[Peer] = []
    for n in chosen:
        if n == DocsightConnectionMonitor.name:
            # probe.py _detect_method: ICMP when a raw socket can be opened, else TCP 443
            peers.append(DocsightConnectionMonitor(
                method="icmp" if raw_icmp_available() else "tcp"))
        else:
            peers.append(PEERS[n]())
    return peers


def report(peers: Sequence[Peer], targets: Sequence[str], started_ms: int, ended_ms: int,
           stopped_by: str) -> dict[str, Any]:
    def span(s: int, e: int | None) -> dict[str, Any]:
        return {"start": iso(s), "end": None if e is None else iso(e),
                "start_ms": s, "end_ms": e}

    out: dict[str, Any] = {"targets": list(targets), "started": iso(started_ms),
                           "ended": iso(ended_ms), "stopped_by": stopped_by, "peers": {}}
    for p in peers:
        entry: dict[str, Any] = {
            "tool": p.tool, "policy": p.policy, "source": p.source, "targets": p.targets,
            "interval_s": p.interval_s, "polls": p.polls,
            "outages": [span(s, e) for s, e in p.outages()]}
        if isinstance(p, DocsightConnectionMonitor):
            entry["probe_method"] = p.method
            entry["per_target"] = {t: [span(s, e) for s, e in v]
                                   for t, v in p.target_outages().items()}
        out["peers"][p.name] = entry
    return out


def write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


async def run_all(peers: Sequence[Peer], targets: Sequence[str], duration_s: float,
                  out: Path) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stopped_by = ["duration"]

    def on_signal(name: str) -> None:
        stopped_by[0] = name
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    prober = NetProber(targets)
    started = _wall_ms()
    tasks = [asyncio.ensure_future(run_peer(p, targets, stop, prober)) for p in peers]
    print(f"peers: {', '.join(p.name for p in peers)} probing {', '.join(targets)} "
          f"for {duration_s:g} s", flush=True)
    await _wait_or_stop(stop, duration_s)
    stop.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    prober.close()
    for p, r in zip(peers, results):
        if isinstance(r, BaseException):
            print(f"peers: {p.name} stopped on an error: {r}", file=sys.stderr)
    data = report(peers, targets, started, _wall_ms(), stopped_by[0])
    write_json(out, data)
    return data


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m bench.lab.peers",
        description="Run today's monitoring tools' default policies side by side and "
                    "write the outages each would report.")
    ap.add_argument("--targets", required=True,
                    help="comma-separated IPv4 anchors (RFC 5737 or loopback)")
    ap.add_argument("--duration", type=float, required=True, help="seconds to run")
    ap.add_argument("--json", dest="json_out", required=True, type=Path,
                    help="file to write the outages to (ISO UTC)")
    ap.add_argument("--peers", help=f"comma-separated subset of: {', '.join(PEERS)}")
    args = ap.parse_args(argv)
    try:
        targets = parse_targets(args.targets)
        if args.duration <= 0:
            raise ValueError("--duration: must be more than 0 seconds")
        if not args.json_out.parent.is_dir():
            raise ValueError(f"--json: folder {args.json_out.parent} does not exist")
        peers = make_peers(args.peers)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    data = asyncio.run(run_all(peers, targets, args.duration, args.json_out))
    for name, entry in data["peers"].items():
        print(f"{name:20} {entry['polls']:5d} polls  {len(entry['outages'])} outage(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
