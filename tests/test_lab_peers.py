"""Peers for the outage lab: each tool's default policy and its own outage rule.

The decision rules run on a virtual clock (bench.lab.peers.simulate) against a link
that drops every packet during a cut [start_s, end_s): no network, no sleeping. Times
are ms from the start of the simulation. The live tests at the end probe loopback only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.lab.peers import (
    PEERS,
    DocsightConnectionMonitor,
    Gatus,
    HomeAssistantPing,
    NetProber,
    Peer,
    Poll,
    SmokePing,
    UptimeKuma,
    echo_request,
    icmp_checksum,
    parse_targets,
    plan,
    run_peer,
    run_poll,
    simulate,
    simulate_poll,
)

ROOT = Path(__file__).resolve().parent.parent
S = 1000
A, B = "198.51.100.7", "203.0.113.9"


def always(target: str, t_ms: int) -> bool:
    return True


# --- what one poll does ---------------------------------------------------------

def test_home_assistant_poll_is_five_echoes_one_after_another():
    p = HomeAssistantPing([A]).probe_plan()
    assert (p["kind"], p["count"], p["timeout_s"], p["sequential"]) == ("icmp", 5, 1.0, True)
    up = simulate_poll(p, 0, always, rtt_ms=20)
    # send, answer after 20 ms, wait 1 s, send again ...: 4 x 1020 + 20
    assert [x.sent_ms for x in up.probes] == [0, 1020, 2040, 3060, 4080]
    assert up.duration_ms == 4100
    down = simulate_poll(p, 0, lambda t, ms: False)
    # each echo waits its 1 s timeout, then 1 s before the next: 5 x 1000 + 4 x 1000
    assert down.duration_ms == 9000 and down.replies() == 0


def test_uptime_kuma_poll_is_ping_c3_w10():
    p = UptimeKuma([A]).probe_plan()
    up = simulate_poll(p, 0, always, rtt_ms=20)
    assert up.replies() == 3 and up.duration_ms == 2020      # stops at the third answer
    down = simulate_poll(p, 0, lambda t, ms: False)
    assert down.sent() == 10 and down.duration_ms == 10_000  # one send a second until -w 10


def test_docsight_probes_both_targets_once_smokeping_twenty_times():
    d = DocsightConnectionMonitor([A, B]).probe_plan()
    assert d["targets"] == [A, B] and d["count"] == 1 and d["timeout_s"] == 2.0
    poll = simulate_poll(d, 0, lambda t, ms: t == A)
    assert (poll.replies(A), poll.replies(B), poll.duration_ms) == (1, 0, 2000)
    s = simulate_poll(SmokePing([A]).probe_plan(), 0, always, rtt_ms=20)
    assert s.sent() == 20 and s.duration_ms == 19_020


def test_single_host_tools_watch_the_first_target():
    for cls in (HomeAssistantPing, UptimeKuma, Gatus, SmokePing):
        assert cls([A, B]).targets == [A]
    assert DocsightConnectionMonitor([A, B]).targets == [A, B]


# --- Home Assistant ping: 30 s after the previous poll, any answer is up ------------

def test_home_assistant_finds_a_45s_cut_at_the_end_of_a_silent_poll():
    # Polls start 34.1 s apart (4.1 s poll + 30 s); the one at 102.3 s gets no answer
    # and the state turns off when it ends (9 s later). The next poll starts 30 s after
    # that, at 141.3 s: its third echo (145.3 s) is answered and it ends at 147.36 s.
    assert simulate(HomeAssistantPing(), cuts=[(100, 145)], until_s=300) == \
        [(111_300, 147_360)]


def test_home_assistant_one_answer_keeps_it_on():
    # The poll at 102.3 s gets its first echo through just before a 27 s cut begins.
    assert simulate(HomeAssistantPing(), cuts=[(103, 130)], until_s=300) == []


def test_home_assistant_misses_a_cut_between_polls():
    assert simulate(HomeAssistantPing(), cuts=[(107, 135)], until_s=300) == []


def test_home_assistant_observe_uses_the_end_of_the_poll():
    ha = HomeAssistantPing([A])
    ha.observe(0, Poll.single(A, [None] * 5, duration_ms=9000))
    assert ha.outages() == [(9000, None)]
    ha.observe(39_000, Poll.single(A, [None, None, 20.0, 20.0, 20.0], duration_ms=6100))
    assert ha.outages() == [(9000, 45_100)]


# --- Uptime Kuma: 60 s, retries 0, three answers within 10 s -------------------------

def test_uptime_kuma_sees_a_45s_cut_when_a_beat_falls_inside():
    # Beats at 0, 60, 120 s. The beat at 60 s gets nothing: DOWN, stamped with the beat's
    # start; the beat at 120 s is UP. Truth 30-75 s: start +30 s, end +45 s.
    assert simulate(UptimeKuma(), cuts=[(30, 75)], until_s=300) == [(60_000, 120_000)]


def test_uptime_kuma_misses_a_45s_cut_that_ends_early_in_a_beat():
    # The beat at 60 s keeps pinging until 70 s: 65, 66, 67 s are answered -> UP.
    assert simulate(UptimeKuma(), cuts=[(20, 65)], until_s=300) == []


def test_uptime_kuma_reports_from_the_beat_start_even_before_the_cut():
    # Only the 60 s echo is answered (< 3): the beat is DOWN and dated 60 s, 1 s before
    # the line actually went down.
    assert simulate(UptimeKuma(), cuts=[(61, 106)], until_s=300) == [(60_000, 120_000)]


def test_uptime_kuma_one_failed_beat_is_down_the_next_good_one_up():
    k = UptimeKuma([A])
    k.observe(0, Poll.single(A, [20.0, None, 20.0, None, None, None, None, None, None, None],
                             duration_ms=10_000))
    assert k.is_down and k.outages() == [(0, None)]
    k.observe(60_000, Poll.single(A, [20.0, 20.0, 20.0], duration_ms=2020))
    assert k.outages() == [(0, 60_000)]


def test_uptime_kuma_under_loss():
    # one packet in three lost: ~7 of 10 answered, never down
    assert simulate(UptimeKuma(), until_s=3600,
                    lost=lambda t, ms: (ms // 1000) % 3 == 0) == []
    # four in five lost: 2 answers per beat, down for the whole hour
    assert simulate(UptimeKuma(), until_s=3600,
                    lost=lambda t, ms: (ms // 1000) % 5 != 0) == [(0, None)]


# --- Gatus: 60 s, 3 failures to open, 2 successes to close ----------------------------

def test_gatus_misses_a_2_minute_cut():
    # Checks at 60 and 120 s fail, 180 s succeeds: two failures in a row only.
    assert simulate(Gatus(), cuts=[(50, 170)], until_s=600) == []


def test_gatus_finds_a_150s_cut_late_and_closes_after_two_good_checks():
    # Checks at 60, 120, 180 s fail; the alert opens when the third ends (10 s timeout),
    # at 190 s. 240 s and 300 s succeed; it resolves when the second ends (300.02 s).
    # Truth 50-200 s: start +140 s, end +100 s.
    assert simulate(Gatus(), cuts=[(50, 200)], until_s=600) == [(190_000, 300_020)]


def test_gatus_one_good_check_does_not_resolve():
    g = Gatus([A])
    fail, ok = Poll.single(A, [None], 10_000), Poll.single(A, [20.0], 20)
    for i in range(3):
        g.observe(i * 60 * S, fail)
    assert g.outages() == [(130_000, None)]
    g.observe(180 * S, ok)
    g.observe(240 * S, fail)
    g.observe(300 * S, ok)
    assert g.is_down
    g.observe(360 * S, ok)
    assert g.outages() == [(130_000, 360_020)]


# --- DOCSight: 5 s, 5 consecutive timeouts per target --------------------------------

def test_docsight_finds_a_30s_cut_dated_from_the_first_timeout():
    assert simulate(DocsightConnectionMonitor(), cuts=[(100, 130)], until_s=300) == \
        [(100_000, 130_000)]
    # out of phase by 1 s: rounds at 105..130 s time out, 135 s answers
    assert simulate(DocsightConnectionMonitor(), cuts=[(101, 131)], until_s=300) == \
        [(105_000, 135_000)]


def test_docsight_misses_a_20s_cut():
    # rounds at 105, 110, 115, 120 s time out: 4 < 5
    assert simulate(DocsightConnectionMonitor(), cuts=[(101, 121)], until_s=300) == []


def test_docsight_judges_each_target_on_its_own():
    d = DocsightConnectionMonitor()
    out = simulate(d, until_s=300, lost=lambda t, ms: t == B and 100_000 <= ms < 140_000)
    assert out == [(100_000, 140_000)]
    assert d.target_outages() == {A: [], B: [(100_000, 140_000)]}


def test_docsight_merges_the_targets_overlapping_outages():
    d = DocsightConnectionMonitor()
    out = simulate(d, until_s=300,
                   lost=lambda t, ms: (t == A and 100_000 <= ms < 140_000)
                   or (t == B and 120_000 <= ms < 160_000))
    assert out == [(100_000, 160_000)]


def test_docsight_four_timeouts_then_an_answer_start_over():
    d = DocsightConnectionMonitor([A])
    lost, ok = Poll.single(A, [None], 2000), Poll.single(A, [20.0], 20)
    for i in range(4):
        d.observe(i * 5 * S, lost)
    d.observe(20 * S, ok)
    for i in range(4):
        d.observe((25 + 5 * i) * S, lost)
    assert d.outages() == []
    d.observe(45 * S, lost)
    assert d.outages() == [(25_000, None)]


# --- SmokePing: 300 s step, 20 pings, alert on a round with 100 % loss -----------------

def test_smokeping_finds_a_5_minute_cut_that_covers_a_round():
    # The round at 300 s loses all 20 pings; the alert is raised after it (319 s + 1 s
    # timeout) and cleared after the next round (600 s + 19.02 s).
    assert simulate(SmokePing(), cuts=[(290, 590)], until_s=1200) == [(320_000, 619_020)]


def test_smokeping_misses_a_5_minute_cut_split_across_two_rounds():
    assert simulate(SmokePing(), cuts=[(310, 610)], until_s=1200) == []


def test_smokeping_misses_short_cuts_and_heavy_loss():
    assert simulate(SmokePing(), cuts=[(100, 145)], until_s=1200) == []
    # 95 % loss (1 ping in 20 answered) is not "every ping lost"
    assert simulate(SmokePing(), until_s=1200, lost=lambda t, ms: (ms // 1000) % 20 != 0) == []


def test_smokeping_rounds_start_on_multiples_of_the_step():
    assert SmokePing().first_poll_delay_s(1000.0) == pytest.approx(200.0)
    assert SmokePing().first_poll_delay_s(1200.0) == pytest.approx(0.0)


# --- every peer ----------------------------------------------------------------------

@pytest.mark.parametrize("name", list(PEERS))
def test_no_cut_no_outage_and_every_policy_names_its_source(name):
    peer = PEERS[name]()
    assert simulate(peer, until_s=3600) == []
    assert peer.source and peer.policy and peer.interval_s > 0


@pytest.mark.parametrize("name", list(PEERS))
def test_an_open_outage_has_no_end(name):
    assert simulate(PEERS[name](), cuts=[(0, 10_000)], until_s=1000) != []
    assert simulate(PEERS[name](), cuts=[(0, 10_000)], until_s=1000)[-1][1] is None


# --- the live poll and loop, with a fake prober (no network) -------------------------

def test_run_poll_matches_the_plan():
    async def fake(kind, target, timeout_s, port):
        return 1.0 if target == A else None

    p = plan("icmp", [A, B], 10, 0.05, spacing_s=0.01, deadline_s=0.05, replies_needed=3)
    poll = asyncio.run(run_poll(p, fake))
    assert poll.replies(A) == 3                   # stopped at the third answer
    assert 0 < poll.sent(B) <= 5                  # sends stop at the deadline
    assert poll.replies(B) == 0


def test_run_peer_polls_until_stopped():
    class Quick(Peer):
        name, interval_s, schedule = "quick", 0.02, "fixed"

        def probe_plan(self):
            return plan("icmp", self.targets, 1, 0.01)

        def observe(self, t_ms, poll):
            self.polls += 1

    calls = []

    async def fake(kind, target, timeout_s, port):
        calls.append(target)
        return 1.0

    async def go():
        stop = asyncio.Event()
        peer = Quick()
        task = asyncio.ensure_future(run_peer(peer, [A], stop, fake))
        await asyncio.sleep(0.15)
        stop.set()
        await asyncio.wait_for(task, 1.0)
        return peer

    peer = asyncio.run(go())
    assert peer.polls >= 3 and set(calls) == {A}


# --- the real prober, on loopback only -----------------------------------------------

def test_icmp_checksum_of_an_echo_request_verifies():
    pkt = echo_request(0x1234, 7)
    assert icmp_checksum(pkt) == 0


def test_real_prober_on_loopback():
    async def go():
        server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0)
        open_port = server.sockets[0].getsockname()[1]
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
        s.close()
        prober = NetProber(["127.0.0.1"])
        try:
            icmp = await prober("icmp", "127.0.0.1", 2.0)
            t = time.monotonic()
            tcp_open = await prober("tcp", "127.0.0.1", 2.0, open_port)
            tcp_closed = await prober("tcp", "127.0.0.1", 2.0, closed_port)
            closed_took = time.monotonic() - t
            with pytest.raises(ValueError):
                await prober("icmp", "127.0.0.2", 1.0)   # not an allowed target: no packet
            mode = prober.icmp_mode
        finally:
            prober.close()
            server.close()
            await server.wait_closed()
        return icmp, tcp_open, tcp_closed, closed_took, mode

    icmp, tcp_open, tcp_closed, closed_took, mode = asyncio.run(go())
    assert icmp is not None and 0 <= icmp < 1000, mode
    assert tcp_open is not None and tcp_open < 1000
    assert tcp_closed is None and closed_took < 1.5    # refused at once, not a timeout


def test_real_poll_on_loopback_with_home_assistants_plan():
    async def go():
        prober = NetProber(["127.0.0.1"])
        try:
            p = HomeAssistantPing(["127.0.0.1"]).probe_plan()
            p["spacing_s"] = 0.05                      # keep the test short
            return await run_poll(p, prober)
        finally:
            prober.close()

    poll = asyncio.run(go())
    assert poll.sent() == 5 and poll.replies() == 5


# --- command line ----------------------------------------------------------------------

def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bench.lab.peers", *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_cli_refuses_targets_outside_the_lab():
    # The first address past an RFC 5737 block: outside the lab (refused before any
    # packet is sent), and a name, never resolved.
    outside = str(ipaddress.IPv4Address("192.0.2.255") + 1)
    for bad in (outside, "example.org"):
        proc = _cli("--targets", bad, "--duration", "1", "--json", os.devnull)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 2 and err.startswith("error: --targets") \
            and "Traceback" not in err
    assert parse_targets(f"{A}, {B}") == [A, B]


def test_cli_runs_all_peers_and_writes_json(tmp_path):
    out = tmp_path / "peers.json"
    # 5 s: Home Assistant's poll takes ~4 s (5 echoes 1 s apart), Uptime Kuma's ~2 s
    proc = _cli("--targets", "127.0.0.1", "--duration", "5", "--json", str(out))
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    data = json.loads(out.read_text())
    assert set(data["peers"]) == set(PEERS) and data["stopped_by"] == "duration"
    for name, entry in data["peers"].items():
        assert entry["outages"] == [], name
        assert entry["targets"] == ["127.0.0.1"]
    # all but SmokePing (which waits for its step) poll at once
    assert all(data["peers"][n]["polls"] >= 1 for n in PEERS if n != "smokeping")
    assert data["started"].endswith("Z")


def test_cli_writes_json_on_sigterm(tmp_path):
    out = tmp_path / "peers.json"
    proc = _cli("--targets", "127.0.0.1", "--duration", "120", "--json", str(out))
    assert proc.stdout is not None
    line = proc.stdout.readline()                     # printed once the peers are running
    assert line.startswith("peers:"), line
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=30)
    assert proc.returncode == 0
    data = json.loads(out.read_text())
    assert data["stopped_by"] == "SIGTERM" and set(data["peers"]) == set(PEERS)
