"""agent/probe.py and agent/clock.py against real sockets, run by MicroPython.

Each test starts the `micropython` binary on tests/mpy/probe_drive.py with the
agent modules cross-compiled by mpy-cross (as they ship to a board) and a 64 KiB
heap (an ESP32's). The peers are tiny servers this test runs on 127.0.0.1 (a DNS
responder, an NTP responder, TCP listeners) or a network namespace it creates
(RFC 5737 addresses only) and always deletes. Nothing leaves the machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import struct
import subprocess
import threading
import time
from pathlib import Path

import pytest

from testing.mpy import micropython, mpy_cross_exe

ROOT = Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "mpy" / "probe_drive.py"
HEAP = "64K"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="raw sockets and namespaces need root")


@pytest.fixture(scope="session")
def mpy_build(tmp_path_factory) -> Path:
    """probe.mpy and clock.mpy, built by mpy-cross as for the board."""
    out = tmp_path_factory.mktemp("agent_mpy")
    for mod in ("probe", "clock"):
        subprocess.run([mpy_cross_exe(), "-o", str(out / f"{mod}.mpy"), str(ROOT / "wanwitness" / "agent" / f"{mod}.py")],
                       check=True, capture_output=True, text=True)
    return out


def drive(build: Path, cmd: str, args: dict, netns: str | None = None, drop_raw: bool = False,
          timeout: float = 60) -> dict:
    argv = [micropython(), "-X", f"heapsize={HEAP}", str(DRIVER), cmd, json.dumps(args)]
    if drop_raw:  # root without CAP_NET_RAW: socket(SOCK_RAW) fails with EPERM
        argv = ["setpriv", "--bounding-set=-net_raw", "--inh-caps=-net_raw", *argv]
    if netns:
        argv = ["ip", "netns", "exec", netns, *argv]
    env = dict(os.environ, MICROPYPATH=f"{build}:{ROOT / 'tests' / 'mpy'}")
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, cwd=DRIVER.parent)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    raise AssertionError(f"no result from micropython (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")


# ---------------------------------------------------------------- loopback servers

class UdpServer:
    """A UDP responder on 127.0.0.1 running handler(data, addr, sock) in a thread."""

    def __init__(self, handler):
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                data, addr = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            except OSError:
                return
            self.received.append(data)
            self.handler(data, addr, self.sock)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(2)
        self.sock.close()


def _qname(name: str) -> bytes:
    return b"".join(bytes([len(x)]) + x.encode() for x in name.split(".")) + b"\x00"


def _rr(owner: bytes, typ: int, rdata: bytes) -> bytes:
    return owner + struct.pack(">HHIH", typ, 1, 300, len(rdata)) + rdata


_COPIES: dict[bytes, int] = {}  # third.test: copies of each query id seen


def dns_handler(data: bytes, addr, sock: socket.socket) -> None:
    """Answers by query name: ok / nx / servfail / silent / third / evil / liar / late."""
    qid = data[:2]
    end = data.index(b"\x00", 12) + 5
    question = data[12:end]
    labels, i = [], 12
    while data[i]:
        labels.append(data[i + 1:i + 1 + data[i]].decode())
        i += 1 + data[i]
    name = ".".join(labels)

    def reply(flags: int, answers: list[bytes], ancount: int | None = None, rid: bytes = qid) -> bytes:
        n = len(answers) if ancount is None else ancount
        return rid + struct.pack(">HHHHH", flags, 1, n, 0, 0) + question + b"".join(answers)

    if name == "silent.test":
        return
    if name == "third.test":    # answers only the third copy of a query
        seen = _COPIES[qid] = _COPIES.get(qid, 0) + 1
        if seen < 3:
            return
        name = "ok.test"
    if name == "ok.test":
        msg = reply(0x8180, [_rr(b"\xc0\x0c", 1, bytes([192, 0, 2, 10])),
                             _rr(b"\xc0\x0c", 1, bytes([192, 0, 2, 11]))])
    elif name == "nx.test":
        msg = reply(0x8183, [])
    elif name == "servfail.test":
        msg = reply(0x8182, [])
    elif name == "evil.test":  # the answer's owner name is a pointer to itself
        at = 12 + len(question)
        msg = reply(0x8180, [_rr(struct.pack(">H", 0xC000 | at), 1, b"\x01\x02\x03\x04")])
    elif name == "liar.test":  # ANCOUNT 5, one answer present
        msg = reply(0x8180, [_rr(b"\xc0\x0c", 1, bytes([192, 0, 2, 10]))], ancount=5)
    elif name == "late.test":  # a stray reply with another id first: ignored, not fatal
        sock.sendto(reply(0x8180, [_rr(b"\xc0\x0c", 1, bytes([203, 0, 113, 66]))],
                          rid=bytes([qid[0] ^ 0xFF, qid[1]])), addr)
        time.sleep(0.02)
        msg = reply(0x8180, [_rr(b"\xc0\x0c", 1, bytes([192, 0, 2, 12]))])
    else:
        msg = reply(0x8183, [])
    sock.sendto(msg, addr)


NTP_OFFSET_MS = 123_456_789  # the responder's clock runs this far ahead of the host's
NTP_HOLD_S = 0.15            # and holds each request this long between T2 and T3


def _ntp_ts(ms: float) -> bytes:
    sec, frac = divmod(ms / 1000.0 + 2208988800, 1)
    return struct.pack(">II", int(sec) & 0xFFFFFFFF, int(frac * 2**32))


def ntp_handler(mode: str):
    def handle(data: bytes, addr, sock: socket.socket) -> None:
        if mode == "silent" or len(data) < 48:
            return
        t2 = time.time() * 1000 + NTP_OFFSET_MS
        time.sleep(NTP_HOLD_S)
        origin = data[40:48]
        stratum, refid, first = 2, b"GPS\x00", 0x24  # LI 0, VN 4, mode 4
        if mode == "kod":
            stratum, refid = 0, b"RATE"
        elif mode == "badorigin":
            origin = bytes(8)
        elif mode == "client":
            first = 0x23
        t3 = time.time() * 1000 + NTP_OFFSET_MS
        pkt = (bytes([first, stratum, 6, 0xEC]) + bytes(8) + refid + _ntp_ts(t2 - 1000)
               + origin + _ntp_ts(t2) + _ntp_ts(t3))
        sock.sendto(pkt, addr)
    return handle


@pytest.fixture
def listener():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- namespaces

@contextlib.contextmanager
def lab_netns():
    """A namespace of our own (deleted on the way out, whatever happens):
    - 198.51.100.1 on lo: a host that answers;
    - 192.0.2.2/24 on one end of a veth pair whose other end is up in the same
      namespace; the link has ARP off, so frames leave addressed to our own MAC
      and the peer drops them: 192.0.2.x (x != 2) is silent, every probe times out;
    - 203.0.113.0/24: no route at all (fails at once, "unreach").
    (An address on lo would not do: the kernel makes its whole prefix local.)"""
    if not shutil.which("ip"):
        pytest.skip("iproute2 is not installed")
    name = f"wwprobe{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
    try:
        for cmd in (["link", "set", "lo", "up"],
                    ["addr", "add", "198.51.100.1/32", "dev", "lo"],
                    ["link", "add", "wwa", "type", "veth", "peer", "name", "wwb"],
                    ["link", "set", "wwa", "arp", "off"],
                    ["link", "set", "wwa", "up"],
                    ["link", "set", "wwb", "up"],
                    ["addr", "add", "192.0.2.2/24", "dev", "wwa"]):
            subprocess.run(["ip", "-n", name, *cmd], check=True, capture_output=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


# ---------------------------------------------------------------- tests

def test_both_modules_cross_compile(mpy_build):
    for mod in ("probe", "clock"):
        assert (mpy_build / f"{mod}.mpy").stat().st_size > 0


@needs_root
def test_icmp_to_loopback(mpy_build):
    r = drive(mpy_build, "icmp", {"addr": "127.0.0.1", "timeout": 1000})
    assert r["rtt"] is not None and 0 <= r["rtt"] < 100, r


def test_tcp_to_a_listening_port(mpy_build, listener):
    r = drive(mpy_build, "tcp", {"addr": "127.0.0.1", "port": listener, "timeout": 1000})
    assert (r["ok"], r["err"], r["kind"]) == (True, None, "tcp") and r["rtt"] is not None, r
    assert r["plain"] is not None, r


def test_tcp_to_a_closed_port_fails_fast(mpy_build):
    r = drive(mpy_build, "tcp", {"addr": "127.0.0.1", "port": closed_port(), "timeout": 3000})
    assert (r["ok"], r["rtt"], r["err"], r["plain"]) == (False, None, "refused", None), r
    assert r["ms"] < 500, r


@pytest.mark.parametrize("name, addrs, err", [
    ("ok.test", ["192.0.2.10", "192.0.2.11"], None),
    ("late.test", ["192.0.2.12"], None),
    ("nx.test", None, "rcode 3 (NXDOMAIN)"),
    ("servfail.test", None, "rcode 2 (SERVFAIL)"),
    ("evil.test", None, "compression pointer does not point backwards"),
    ("liar.test", None, "truncated answer 2 of 5"),
    ("silent.test", None, "timeout"),
])
def test_dns_against_a_loopback_responder(mpy_build, name, addrs, err):
    with UdpServer(dns_handler) as srv:
        r = drive(mpy_build, "dns", {"server": "127.0.0.1", "port": srv.port, "name": name, "timeout": 600})
        query = srv.received[0]
    assert r["addrs"] == addrs, r
    assert (r["err"] or "").startswith(err or ""), r
    assert (r["rtt"] is not None) == (err is None), r
    if err == "timeout":
        assert 600 <= r["ms"] < 1000, r
    else:
        assert r["ms"] < 500, r
    # the query on the wire: RD set, one question, type A class IN, for the name asked
    assert query[2:12] == b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00"
    assert query[12:] == _qname(name) + b"\x00\x01\x00\x01"


@pytest.mark.parametrize("name, most, want", [
    ("silent.test", 5, 5),      # a silent resolver: 5 queries, 250 ms apart, one id
    ("silent.test", 1, 1),      # a watch: one query
    ("third.test", 5, 3),       # answered the third time: no more are sent
    ("ok.test", 5, 1),
])
def test_a_round_sends_a_silent_resolver_at_most_five_queries(mpy_build, name, most, want):
    with UdpServer(dns_handler) as srv:
        r = drive(mpy_build, "dns", {"server": "127.0.0.1", "port": srv.port, "name": name,
                                     "timeout": 1500, "tries": most})
        time.sleep(0.3)             # anything sent late would arrive by now
        queries = list(srv.received)
    assert r["tries"] == want == len(queries), (r, len(queries))
    assert len({q[:2] for q in queries}) == 1, "one query id, sent again"
    assert r["ok"] is (name != "silent.test"), r
    if name == "third.test":
        # the answer came after two unanswered queries, 250 ms apart
        assert 500 <= r["rtt"] < 750, r


def test_dns_to_a_port_nobody_listens_on_fails_fast(mpy_build):
    r = drive(mpy_build, "dns", {"server": "127.0.0.1", "port": closed_port(), "name": "ok.test",
                                 "timeout": 2000})
    assert (r["rtt"], r["err"]) == (None, "refused"), r
    assert r["ms"] < 500, r


def test_sntp_recovers_a_known_offset_with_ms_precision(mpy_build):
    with UdpServer(ntp_handler("ok")) as srv:
        r = drive(mpy_build, "sntp", {"server": "127.0.0.1", "port": srv.port, "timeout": 2000})
    assert r["ok"], r
    # The server held the request 150 ms: the round trip excludes that, and the
    # offset is exact to a few ms (ntptime would be off by up to a second).
    assert 0 <= r["rtt"] < 40, r
    error = (r["clock_utc"] - r["host_ms"]) - NTP_OFFSET_MS
    assert abs(error) <= 10, r


@pytest.mark.parametrize("mode, err", [
    ("kod", "kiss-o'-death RATE"),
    ("client", "mode 3, expected 4 (server)"),
    ("badorigin", "timeout"),  # a reply that is not to our request is skipped
    ("silent", "timeout"),
])
def test_sntp_rejects_bad_replies(mpy_build, mode, err):
    with UdpServer(ntp_handler(mode)) as srv:
        r = drive(mpy_build, "sntp", {"server": "127.0.0.1", "port": srv.port, "timeout": 800})
    assert (r["ok"], r["err"]) == (False, err), r


@pytest.mark.skipif(not shutil.which("setpriv"), reason="setpriv (util-linux) is not installed")
def test_round_falls_back_to_tcp_without_raw_sockets(mpy_build, listener):
    targets = {"gateway": "127.0.0.1", "anchors": ["127.0.0.1", "127.0.0.2"],
               "fallback_port": listener, "gateway_port": listener}
    r = drive(mpy_build, "round", {"targets": targets, "timeout": 1000}, drop_raw=True)
    assert r["icmp"] is False, r
    for tg in ("gw:127.0.0.1", "127.0.0.1"):
        assert (r["results"][tg]["kind"], r["results"][tg]["ok"]) == ("tcp", True), r
    # the listener is bound to 127.0.0.1 only: 127.0.0.2 refuses
    assert r["results"]["127.0.0.2"]["err"] == "refused", r
    assert (r["gateway_ok"], r["anchors_ok"], r["anchors_total"], r["loss_pct"]) == (True, 1, 2, 50), r


@needs_root
def test_round_on_loopback_uses_icmp(mpy_build, listener):
    with UdpServer(dns_handler) as srv:
        targets = {"gateway": "127.0.0.1", "anchors": ["127.0.0.1", f"127.0.0.1:{listener}"],
                   "dns": f"127.0.0.1:{srv.port}", "dns_name": "ok.test"}
        r = drive(mpy_build, "round", {"targets": targets, "timeout": 1000})
    assert r["icmp"] is True, r
    assert r["results"]["gw:127.0.0.1"]["kind"] == "icmp"
    assert r["results"][f"127.0.0.1:{listener}"]["kind"] == "tcp"
    assert r["results"][f"dns:127.0.0.1:{srv.port}"]["ok"] is True
    assert (r["gateway_ok"], r["anchors_ok"], r["anchors_total"], r["loss_pct"], r["dns_ok"]) == \
        (True, 2, 2, 0, True), r
    assert r["ms"] < 500, r


@needs_root
def test_icmp_timeout_and_unreachable_in_a_namespace(mpy_build):
    with lab_netns() as ns:
        silent = drive(mpy_build, "icmp", {"addr": "192.0.2.1", "timeout": 500}, netns=ns)
        r = drive(mpy_build, "round", {"targets": {
            "gateway": "198.51.100.1",
            "anchors": ["192.0.2.1", "203.0.113.1", "192.0.2.1:443", "198.51.100.1"],
            "dns": "192.0.2.1"}, "timeout": 500}, netns=ns)
        dns_noroute = drive(mpy_build, "dns", {"server": "203.0.113.1", "port": 53, "name": "ok.test",
                                               "timeout": 2000}, netns=ns)
        tcp_noroute = drive(mpy_build, "tcp", {"addr": "203.0.113.1", "port": 443, "timeout": 2000}, netns=ns)
    assert silent["rtt"] is None and 500 <= silent["ms"] < 900, silent
    for r1 in (dns_noroute, tcp_noroute):
        assert (r1["rtt"], r1["err"]) == (None, "unreach") and r1["ms"] < 500, r1
    res = r["results"]
    assert (res["gw:198.51.100.1"]["ok"], res["gw:198.51.100.1"]["kind"]) == (True, "icmp"), r
    assert (res["192.0.2.1"]["ok"], res["192.0.2.1"]["err"]) == (False, "timeout"), r
    assert (res["203.0.113.1"]["ok"], res["203.0.113.1"]["err"]) == (False, "unreach"), r
    assert (res["192.0.2.1:443"]["kind"], res["192.0.2.1:443"]["err"]) == ("tcp", "timeout"), r
    assert res["198.51.100.1"]["ok"] is True, r
    assert (r["gateway_ok"], r["anchors_ok"], r["anchors_total"], r["loss_pct"], r["dns_ok"]) == \
        (True, 1, 4, 75, False), r
    assert 500 <= r["ms"] < 900, r


@needs_root
def test_our_own_echo_request_looped_back_is_not_a_reply(mpy_build):
    # On lo the raw socket receives our echo request too (type 8, from
    # 127.0.0.1). With the kernel's echo replies switched off - in our own
    # namespace only - that request is all there is: the probe must time out.
    with lab_netns() as ns:
        subprocess.run(["ip", "netns", "exec", ns, "sh", "-c",
                        "echo 1 > /proc/sys/net/ipv4/icmp_echo_ignore_all"], check=True)
        r = drive(mpy_build, "icmp", {"addr": "127.0.0.1", "timeout": 400}, netns=ns)
    assert r["rtt"] is None and 400 <= r["ms"] < 800, r


@needs_root
def test_event_loop_never_stalls_while_every_probe_times_out(mpy_build):
    targets = {"gateway": "192.0.2.1", "anchors": ["192.0.2.3", "192.0.2.4", "192.0.2.5:443", "192.0.2.6:53"],
               "dns": "192.0.2.1"}
    with lab_netns() as ns:
        r = drive(mpy_build, "round", {"targets": targets, "timeout": 800, "ticker": True}, netns=ns)
    for tg, e in r["results"].items():
        assert (e["ok"], e["err"]) == (False, "timeout"), (tg, r)
    assert r["icmp"] is True, r
    assert (r["gateway_ok"], r["anchors_ok"], r["loss_pct"], r["dns_ok"]) == (False, 0, 100, False), r
    assert r["ticks"] >= 35, r
    assert r["max_gap"] <= 60, f"the 20 ms ticker stalled for {r['max_gap']} ms"
