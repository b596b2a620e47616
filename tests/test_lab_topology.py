"""The outage lab's network (bench/lab/topology.py) and its DNS responder (bench/lab/dnsd.py).

Runs as root (network namespaces). Every packet stays inside namespaces the lab makes:
the probes below go to RFC 5737 lab addresses only.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.lab import dnsd
from bench.lab.topology import (
    ANCHORS,
    DNS_SERVER,
    GATEWAY,
    LOCK_DIR,
    LOSS_SLOTS,
    SERVER,
    Lab,
    LabError,
    cleanup_stale,
    direction_loss,
    drop_slots,
    netns_list,
)

REPO = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, PYTHONPATH=str(REPO))


@pytest.fixture(scope="module", autouse=True)
def _root():
    if os.geteuid() != 0:
        pytest.fail("tests/test_lab_topology.py builds network namespaces and must run as root "
                    "(this project's test suite runs as root)")


# -- probes run inside a namespace ---------------------------------------------------------

def ping(lab: Lab, ns: str, addr: str, wait: float = 1) -> bool:
    p = lab.run(ns, ["ping", "-c1", "-q", f"-W{wait}", addr], capture_output=True)
    return p.returncode == 0


def tcp(lab: Lab, ns: str, addr: str, port: int, timeout: float = 1) -> bool:
    code = ("import socket, sys\n"
            "a = (sys.argv[1], int(sys.argv[2]))\n"
            "socket.create_connection(a, timeout=float(sys.argv[3])).close()")
    return lab.run(ns, [sys.executable, "-c", code, addr, str(port), str(timeout)],
                   capture_output=True).returncode == 0


DNS_CLIENT = r"""
import socket, struct, sys
name, server, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
q = (struct.pack("!HHHHHH", 0x4242, 0x0100, 1, 0, 0, 0)
     + b"".join(bytes([len(l)]) + l.encode() for l in name.split(".")) + b"\0"
     + struct.pack("!HH", 1, 1))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(timeout)
s.sendto(q, (server, 53))
try:
    r = s.recv(512)
except socket.timeout:
    print("timeout")
else:
    an = struct.unpack("!H", r[6:8])[0]
    print("rcode=%d" % (r[3] & 15), socket.inet_ntoa(r[-4:]) if an else "-")
"""


def dns(lab: Lab, ns: str, name: str, timeout: float = 1) -> str:
    return lab.run(ns, [sys.executable, "-c", DNS_CLIENT, name, DNS_SERVER, str(timeout)],
                   capture_output=True, text=True).stdout.strip()


def root_snapshot() -> tuple:
    """What the lab must never change in the root namespace."""
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    addrs = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return ([ln.split(":")[1].strip() for ln in links.splitlines()],
            sorted(re.sub(r"\s+valid_lft.*", "", a) for a in addrs.splitlines()), routes, nft)


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def lab_namespaces(owner: str) -> list[str]:
    return [n for n in netns_list() if n.startswith(owner + "-")]


# -- one lab for the fault tests ---------------------------------------------------------------

@pytest.fixture(scope="module")
def lab():
    before = root_snapshot()
    lab = Lab()
    lab.up()
    lab.root_before = before  # type: ignore[attr-defined]
    yield lab
    lab.close()


@pytest.fixture(autouse=True)
def _restore(request):
    yield
    if "lab" in request.fixturenames:
        lab = request.getfixturevalue("lab")
        lab.set_router(True)
        lab.set_wifi(True)
        lab.set_wan(True)
        lab.set_loss(0)
        lab.set_dns(True)


def test_lab_reaches_everything(lab):
    assert ping(lab, "agent", GATEWAY)
    assert ping(lab, "agent", SERVER)
    for a in ANCHORS:
        assert ping(lab, "agent", a)
    assert tcp(lab, "agent", ANCHORS[0], 443)
    assert tcp(lab, "agent", ANCHORS[2], 80)
    assert tcp(lab, "agent", GATEWAY, 80)
    assert dns(lab, "agent", "example.test") == "rcode=0 203.0.113.9"
    assert dns(lab, "agent", "anchor.test") == "rcode=0 198.51.100.7"
    assert dns(lab, "agent", "nothing.test") == "rcode=3 -"
    assert ping(lab, "server", ANCHORS[1])
    assert lab.router_state() == {"power": True, "wan": True, "loss": 0, "dns": True}


def test_wan_down_cuts_the_internet_only(lab):
    t = lab.set_wan(False)
    assert abs(t - time.time() * 1000) < 2000
    assert lab.set_wan(False) == t  # idempotent: already down since t
    assert not ping(lab, "agent", ANCHORS[0], wait=0.5)
    assert not tcp(lab, "agent", ANCHORS[1], 443, timeout=0.5)
    assert dns(lab, "agent", "example.test", timeout=0.5) == "timeout"
    assert ping(lab, "agent", GATEWAY)
    assert ping(lab, "agent", SERVER)
    assert lab.router_state()["wan"] is False
    t2 = lab.set_wan(True)
    assert t2 >= t
    assert ping(lab, "agent", ANCHORS[0])
    assert [e[1:] for e in lab.events[-2:]] == [("wan", False), ("wan", True)]


def predicted_lost(seed: int, pct: int, pings: int) -> list[int]:
    """The icmp_seq numbers a ping stream loses: each nft rule counts its own packets."""
    drop_out, drop_in = set(drop_slots(seed, pct, "out")), set(drop_slots(seed, pct, "in"))
    n_in, lost = 0, []
    for i in range(pings):
        if i % LOSS_SLOTS in drop_out:
            lost.append(i + 1)
            continue
        if n_in % LOSS_SLOTS in drop_in:
            lost.append(i + 1)
        n_in += 1
    return lost


def lost_seqs(lab: Lab, pings: int) -> list[int]:
    out = lab.run("agent", ["ping", "-n", f"-c{pings}", "-i0.002", "-W1", ANCHORS[0]],
                  capture_output=True, text=True).stdout
    answered = {int(m) for m in re.findall(r"icmp_seq=(\d+)", out)}
    return [i for i in range(1, pings + 1) if i not in answered]


def test_loss_drops_the_seeded_packets_as_set(lab):
    assert round(direction_loss(30) * 10000) == 1633  # (1 - 0.1633)^2 = 0.70
    with pytest.raises(ValueError):
        lab.set_loss(101)
    lab.set_loss(30)
    assert lab.router_state()["loss"] == 30
    want = predicted_lost(lab.seed, 30, 200)
    assert 15 <= len(want) / 2 <= 45
    assert lost_seqs(lab, 200) == want
    # Set again (the rules, and their counters, made afresh): the same packets again.
    lab.set_loss(0)
    lab.set_loss(30)
    assert lost_seqs(lab, 200) == want
    # Only the WAN path: the LAN is untouched.
    out = lab.run("agent", ["ping", "-q", "-c100", "-i0.002", "-W1", GATEWAY],
                  capture_output=True, text=True).stdout
    assert " 0% packet loss" in out, out
    lab.set_loss(0)
    out = lab.run("agent", ["ping", "-q", "-c100", "-i0.002", "-W1", ANCHORS[0]],
                  capture_output=True, text=True).stdout
    assert " 0% packet loss" in out, out
    assert "table" not in lab.run("router", ["nft", "list", "ruleset"], capture_output=True,
                                  text=True).stdout


def test_dns_down_times_out_but_anchors_answer(lab):
    lab.set_dns(False)
    assert dns(lab, "agent", "example.test", timeout=0.5) == "timeout"
    assert all(ping(lab, "agent", a) for a in ANCHORS)
    assert tcp(lab, "agent", ANCHORS[0], 443)
    assert lab.router_state()["dns"] is False
    lab.set_dns(True)
    assert dns(lab, "agent", "example.test") == "rcode=0 203.0.113.9"


def test_router_off_takes_the_lan_and_the_leds(lab):
    lab.set_router(False)
    assert lab.router_state() == {"power": False, "wan": False, "loss": 0, "dns": True}
    assert not ping(lab, "agent", GATEWAY, wait=0.5)
    assert not ping(lab, "server", GATEWAY, wait=0.5)
    assert not ping(lab, "agent", ANCHORS[0], wait=0.5)
    lab.set_router(True)
    assert ping(lab, "agent", GATEWAY)
    assert ping(lab, "agent", ANCHORS[0])
    assert ping(lab, "server", ANCHORS[2])
    assert tcp(lab, "agent", ANCHORS[0], 443)
    assert dns(lab, "agent", "example.test") == "rcode=0 203.0.113.9"


def test_wifi_down_is_the_agents_link_only(lab):
    lab.set_wifi(False)
    assert not ping(lab, "agent", GATEWAY, wait=0.5)
    assert ping(lab, "server", GATEWAY)
    assert lab.router_state()["power"] is True
    lab.set_wifi(True)
    assert ping(lab, "agent", ANCHORS[0])


def test_switches_are_independent(lab):
    # Wi-Fi back while the router is still off, then the router: all restored.
    lab.set_router(False)
    lab.set_wifi(False)
    lab.set_wan(False)
    lab.set_wifi(True)
    lab.set_router(True)
    assert ping(lab, "agent", GATEWAY)
    assert not ping(lab, "agent", ANCHORS[0], wait=0.5)  # the WAN is still down
    lab.set_wan(True)
    assert ping(lab, "agent", ANCHORS[0])
    assert lab.switches() == {"power": True, "wan": True, "loss": 0, "dns": True, "wifi": True}


def test_no_way_out_of_the_lab(lab):
    # The isp has no default route: a packet for anything outside the lab dies there.
    isp_routes = lab.run("isp", ["ip", "route"], capture_output=True, text=True).stdout
    assert "default" not in isp_routes
    # The agent's and the router's default routes point into the lab.
    assert lab.run("agent", ["ip", "route", "show", "default"], capture_output=True,
                   text=True).stdout.startswith("default via 192.0.2.1 dev wlan0")
    assert lab.run("router", ["ip", "route", "show", "default"], capture_output=True,
                   text=True).stdout.startswith("default via 203.0.113.250 dev wan0")
    # Every veth's other end is in a lab namespace, never in the root namespace.
    for role, _name in lab.ns.items():
        ids = dict(re.findall(r"nsid (\d+) \(iproute2 netns name: (\S+)\)", lab.run(
            role, ["ip", "netns", "list-id"], capture_output=True, text=True).stdout))
        links = json.loads(lab.run(role, ["ip", "-j", "link"], capture_output=True,
                                   text=True).stdout)
        for link in links:
            if "link_netnsid" in link:
                assert ids.get(str(link["link_netnsid"])) in lab.ns.values(), (role, link["ifname"])
            else:
                assert link["ifname"] in ("lo", "br-lan"), (role, link["ifname"])
        ruleset = lab.run(role, ["nft", "list", "ruleset"], capture_output=True, text=True).stdout
        assert "nat" not in ruleset and "masquerade" not in ruleset
    # ip_forward only in the router.
    assert lab.run("router", ["sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True,
                   text=True).stdout.strip() == "1"
    assert lab.run("agent", ["sysctl", "-n", "net.ipv4.ip_forward"], capture_output=True,
                   text=True).stdout.strip() == "0"
    # The root namespace (its links, addresses, routes, nftables) is as it was.
    assert root_snapshot() == lab.root_before  # type: ignore[attr-defined]


# -- cleanup -------------------------------------------------------------------------------------

def test_close_leaves_nothing():
    before = root_snapshot()
    lab = Lab()
    lab.up()
    sleeper = lab.popen("server", ["sleep", "600"])
    lab.set_wan(False)
    lab.set_dns(False)
    pids = [p.pid for p in lab.procs]
    assert lab_namespaces(lab.owner)
    lab.close()
    lab.close()  # again: nothing to do
    assert lab_namespaces(lab.owner) == []
    assert not any(alive(p) for p in pids)
    assert sleeper.returncode is not None
    assert not (LOCK_DIR / f"{lab.pid}-{lab.run_id}.lock").exists()
    assert root_snapshot() == before
    with pytest.raises(LabError):
        lab.set_wan(True)


def test_cleanup_stale_removes_dead_owners_only():
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = [f"wwlab-{dead.pid}-t1-{r}" for r in ("agent", "isp")]
    live = "wwlab-1-t2-agent"  # pid 1 exists: someone else's lab, never touched
    procs = []
    try:
        for name in [*stale, live]:
            subprocess.run(["ip", "netns", "add", name], check=True)
        procs = [subprocess.Popen(["ip", "netns", "exec", stale[0], "sleep", "600"],
                                  start_new_session=True)]
        deadline = time.monotonic() + 5
        while not subprocess.run(["ip", "netns", "pids", stale[0]], capture_output=True,
                                 text=True).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.02)
        removed = cleanup_stale()
        assert set(stale) <= set(removed)
        names = netns_list()
        assert live in names
        assert not set(stale) & set(names)
        assert procs[0].wait(5) == -signal.SIGKILL
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for name in [*stale, live]:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


LAB_SCRIPT = r"""
import time
from bench.lab.topology import Lab
lab = Lab()
lab.up()
lab.set_loss(10)
p = lab.popen("agent", ["sleep", "600"])
print(lab.owner, p.pid, flush=True)
time.sleep(600)
"""


def sigint_as_in_a_terminal() -> None:
    """preexec_fn: Ctrl-C's default action in the child, as a user's shell gives it. A
    test run started in the background (`cmd &` in a script) ignores SIGINT, its
    children inherit that, and Python then installs no KeyboardInterrupt at all."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_lab_process() -> tuple[subprocess.Popen, str, int]:
    proc = subprocess.Popen([sys.executable, "-c", LAB_SCRIPT], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    assert proc.stdout is not None
    ready = select.select([proc.stdout], [], [], 30)[0]
    line = proc.stdout.readline() if ready else ""
    if not line:
        proc.kill()
        pytest.fail(f"the lab script did not come up: {proc.communicate()[1]}")
    owner, pid = line.split()
    assert len(lab_namespaces(owner)) == 4
    return proc, owner, int(pid)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_cleans_up(sig):
    proc, owner, sleeper = start_lab_process()
    proc.send_signal(sig)
    rc = proc.wait(20)
    assert rc == -sig  # cleaned up, then died of the signal as it would have without the lab
    assert lab_namespaces(owner) == []
    assert not alive(sleeper)
    assert not list(LOCK_DIR.glob(f"{proc.pid}-*.lock"))


STUBBORN_SCRIPT = r"""
import sys, time
from bench.lab.topology import Lab
lab = Lab()
lab.up()
lab.popen("agent", [sys.executable, "-c", "import signal, time; "
          "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(flush=True); time.sleep(600)"],
          stdout=-1).stdout.readline()
print(lab.owner, flush=True)
lab.close(grace_s=2)  # the process above ignores SIGTERM: 2 s until SIGKILL
print("closed", flush=True)
"""


def test_ctrl_c_during_close_lets_it_finish():
    proc = subprocess.Popen([sys.executable, "-c", STUBBORN_SCRIPT], cwd=REPO, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_in_a_terminal)
    owner = proc.stdout.readline().strip()  # type: ignore[union-attr]
    assert owner.startswith("wwlab-"), proc.communicate()[1]
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    # close() ran to the end, then the interrupt was delivered (it never printed "closed").
    assert proc.returncode == -signal.SIGINT and "closed" not in out, err
    assert "KeyboardInterrupt" in err
    assert lab_namespaces(owner) == []


def test_sigkill_is_cleaned_up_by_the_next_run():
    proc, owner, sleeper = start_lab_process()
    proc.kill()
    proc.wait(10)
    assert len(lab_namespaces(owner)) == 4  # nobody could clean up...
    assert alive(sleeper)
    assert set(lab_namespaces(owner)) <= set(cleanup_stale())  # ...until the next run does
    assert lab_namespaces(owner) == []
    deadline = time.monotonic() + 5
    while alive(sleeper) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(sleeper)


# -- the DNS responder, byte for byte ----------------------------------------------------

def query(name: str, qtype: int = 1, flags: int = 0x0100, qid: int = 0xBEEF) -> bytes:
    return (struct.pack("!HHHHHH", qid, flags, 1, 0, 0, 0)
            + b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
            + struct.pack("!HH", qtype, 1))


def test_dnsd_answers_from_its_table():
    q = query("Example.TEST")
    r = dnsd.answer(q)
    # id; QR AA RD, NOERROR; 1 question, 1 answer; question echoed as asked;
    # answer: pointer to the name at 12, A, IN, TTL 60, 4 bytes, 203.0.113.9.
    assert r == (b"\xbe\xef\x85\x00\x00\x01\x00\x01\x00\x00\x00\x00" + q[12:]
                 + b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + bytes([203, 0, 113, 9]))


def test_dnsd_edges():
    assert dnsd.answer(query("nothing.test"))[2:4] == b"\x85\x03"     # NXDOMAIN
    nodata = dnsd.answer(query("example.test", qtype=28))           # AAAA: NODATA
    assert nodata[2:8] == b"\x85\x00\x00\x01\x00\x00"
    assert dnsd.answer(query("example.test", flags=0x8100)) is None  # a response: ignored
    assert dnsd.answer(b"\x00" * 11) is None                         # not even a header
    assert dnsd.answer(query("example.test", flags=0x2100))[3] & 15 == 4  # UPDATE: NOTIMP
    pointer = struct.pack("!HHHHHH", 1, 0, 1, 0, 0, 0) + b"\xc0\x0c\x00\x01\x00\x01"
    assert dnsd.answer(pointer)[3] & 15 == 1                          # FORMERR
    assert dnsd.answer(query("example.test")[:-3])[3] & 15 == 1      # truncated question
    assert dnsd.answer(query("anchor.test"), {"anchor.test": "192.0.2.99"})[-4:] == bytes(
        [192, 0, 2, 99])
