"""The outage lab's network: a home in four network namespaces, and the fault switches.

```
 agent ns ──"wifi" veth── router ns ──WAN veth── isp ns
 wlan0 192.0.2.20          br-lan 192.0.2.1         up0 203.0.113.250/30
 default via 192.0.2.1     wan0 203.0.113.249/30    anchors 198.51.100.7, 198.51.100.8,
                           default via .250           203.0.113.9 (TCP 80, 443)
                              │ lan1                DNS 198.51.100.53 (bench.lab.dnsd)
                           server ns                192.0.2.0/24 via .249; NO default route
                           eth0 192.0.2.10, default via 192.0.2.1
```

Every address is from RFC 5737. The namespaces are wired only to each other (each veth
is created with both ends inside the lab, never in the root namespace), the isp has no
default route and nothing does NAT: a packet for an address outside the lab dies in the
isp namespace. The anchors sit on the isp's loopback (this kernel has no `dummy` link
type; the kernel answers ICMP echo for any local address all the same).

The switches (each idempotent; each returns the wall-clock ms at which its command had
returned, i.e. the change was in force; nft takes ~15 ms, ip ~3 ms, so the true moment
is at most that much earlier):

| switch | what it does | what a probe from the agent sees |
|---|---|---|
| set_wan(False) | router nft (inet wwlab): drop all iif/oif wan0 (forward, input, output) | anchors and DNS time out; gateway, server fine |
| set_loss(N) | router nft: `numgen inc mod 10000 @drop_in drop` on iif wan0 (`@drop_out` on oif), each set K slots of 10000 chosen by the lab's seed, K per direction so that N % of round trips fail | N % of anchor/DNS probes lost; whether the n-th packet each way is dropped depends on the seed alone; LAN clean |
| set_dns(False) | isp nft: drop udp/tcp dport 53 to 198.51.100.53 | DNS times out; anchors answer |
| set_router(False) | router: br-lan, wifi0, lan1, wan0 set down (routes through wan0 go with it) | nothing answers, not even the gateway |
| set_router(True) | links up, default route back, agent/server ARP caches flushed | all back at once |
| set_wifi(False) | agent: wlan0 down (its routes go with it) | every send fails at once (no route) |

Only the network is switched: the virtual board's own Wi-Fi state (its control file's
"wifi") and the router's LEDs are the caller's to set, from switches()/router_state().

Namespaces are named `wwlab-<pid>-<run>-<role>`: `cleanup_stale()` removes those of a
lab whose process is gone (or whose lock in /run/wwlab is no longer held, should the
pid have been reused). `Lab.close()` runs from `with`, atexit and on SIGINT / SIGTERM /
SIGHUP. A SIGKILLed lab cannot clean up after itself: the next `Lab.up()` (which calls
`cleanup_stale()` first) does.

    with Lab() as lab:
        lab.up()
        lab.popen("server", [...])
        t = lab.set_wan(False)      # wall-clock ms at which the WAN went down
"""

from __future__ import annotations

import atexit
import fcntl
import math
import os
import random
import re
import secrets
import select
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Any

from wanwitness.errors import UserError

from .dnsd import TABLE, ready

PREFIX = "wwlab"
ROLES = ("agent", "router", "isp", "server")
LOCK_DIR = Path("/run/wwlab")
REPO = Path(__file__).resolve().parents[2]

# -- the address plan (RFC 5737 only) --------------------------------------------------
LAN = "192.0.2.0/24"
GATEWAY = "192.0.2.1"
SERVER = "192.0.2.10"
AGENT = "192.0.2.20"
WAN_NET = "203.0.113.248/30"
WAN_ROUTER = "203.0.113.249"
WAN_ISP = "203.0.113.250"
ANCHORS = ("198.51.100.7", "198.51.100.8", "203.0.113.9")
DNS_SERVER = "198.51.100.53"
ANCHOR_TCP_PORTS = (80, 443)
GATEWAY_TCP_PORTS = (80,)

# Interface names live inside their namespace, so they are fixed.
IF_AGENT = "wlan0"      # agent side of the Wi-Fi link
IF_WIFI = "wifi0"       # router side of the Wi-Fi link (a port of br-lan)
IF_LAN = "lan1"         # router side of the server's cable (a port of br-lan)
IF_BRIDGE = "br-lan"
IF_WAN = "wan0"         # router side of the WAN link
IF_UPLINK = "up0"       # isp side of the WAN link
IF_SERVER = "eth0"

NFT_TABLE = "wwlab"     # the one nftables table (family inet) in the router and isp namespaces
# Loss drops the packets whose number (counted per rule, per direction, from the rule's
# creation) falls in a seeded set of slots of this cycle: the same seed drops the same
# packets, where the kernel's `numgen random` could not be seeded.
LOSS_SLOTS = 10000
READY_TIMEOUT_S = 10


class LabError(UserError):
    """The lab could not be built or driven (not root, a tool missing, a command failed)."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def direction_loss(pct: int) -> float:
    """Drop probability per direction so that a round trip is lost with `pct` %.

    A probe fails when either its request or its reply is dropped, so dropping p in each
    direction loses 1 - (1 - p)^2 of the round trips; the lab's `loss` is that round-trip
    figure, the one the agent measures (its degraded_loss_pct).
    """
    return 1 - math.sqrt(1 - pct / 100)


def new_seed() -> int:
    """A fresh seed for a run that was given none (printed, so it can be given next time)."""
    return secrets.randbelow(1_000_000)


def drop_slots(seed: int, pct: int, direction: str) -> list[int]:
    """The packet slots (0..LOSS_SLOTS-1, sorted) dropped in one direction at `pct` % loss.

    round(direction_loss(pct) * LOSS_SLOTS) of them, chosen by an RNG seeded with the seed,
    the percentage and the direction ("in" or "out"), so the two directions drop
    independently and a given seed and percentage always give the same slots (a str seed
    is hashed with SHA-512: no PYTHONHASHSEED in it).
    """
    k = round(direction_loss(pct) * LOSS_SLOTS)
    rng = random.Random(f"wwlab-loss-{seed}-{pct}-{direction}")
    return sorted(rng.sample(range(LOSS_SLOTS), k))


def loss_rules(seed: int, pct: int) -> tuple[dict[str, list[int]], str, str]:
    """nftables for `pct` % seeded loss: the named sets of drop slots, and the rule tails
    for packets in through the WAN and out through it."""
    sets: dict[str, list[int]] = {}
    tails = []
    for d in ("in", "out"):
        slots = drop_slots(seed, pct, d)
        if len(slots) == LOSS_SLOTS:
            tails.append("drop")
        elif slots:
            sets[f"drop_{d}"] = slots
            tails.append(f"numgen inc mod {LOSS_SLOTS} @drop_{d} drop")
        else:
            tails.append("")
    return sets, tails[0], tails[1]


# -- small helpers -------------------------------------------------------------------

def _cmd(argv: list[str], *, input: str | None = None,
         check: bool = True) -> subprocess.CompletedProcess:
    p = subprocess.run(argv, input=input, capture_output=True, text=True)
    if check and p.returncode != 0:
        raise LabError(f"lab: `{' '.join(argv)}` failed (status {p.returncode}): "
                       f"{(p.stderr or p.stdout).strip()}")
    return p


def _ip_batch(ns: str, lines: list[str]) -> None:
    _cmd(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines) + "\n")


def netns_list() -> list[str]:
    out = _cmd(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _ns_pids(ns: str) -> list[int]:
    out = _cmd(["ip", "netns", "pids", ns], check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def _kill_ns(ns: str) -> None:
    """SIGKILL every process whose network namespace is `ns`, until none is left."""
    for _ in range(100):
        pids = [p for p in _ns_pids(ns) if p != os.getpid()]
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.02)


def _remove_ns(names: list[str]) -> None:
    for ns in names:
        _kill_ns(ns)
    for ns in names:
        _cmd(["ip", "netns", "del", ns], check=False)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _lock_held(path: Path) -> bool | None:
    """True if some process holds the flock on path, False if none, None if no file."""
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also releases the lock if we got it
    return False


def cleanup_stale() -> list[str]:
    """Remove the namespaces (and the processes in them) of labs whose owner is gone.

    A lab `wwlab-<pid>-<run>-*` is stale when <pid> no longer exists, or when its lock
    /run/wwlab/<pid>-<run>.lock exists but nobody holds it (the pid was reused). Labs of
    live processes, including other people's concurrent runs, are left alone. Returns
    the namespaces removed.
    """
    groups: dict[str, list[str]] = {}
    for ns in netns_list():
        if re.match(rf"{PREFIX}-\d+-", ns):
            groups.setdefault(ns.rsplit("-", 1)[0], []).append(ns)
    removed = []
    for owner, names in groups.items():
        pid = int(owner.split("-")[1])
        lock = LOCK_DIR / (owner[len(PREFIX) + 1:] + ".lock")
        if _pid_alive(pid) and _lock_held(lock) is not False:
            continue
        _remove_ns(names)
        lock.unlink(missing_ok=True)
        removed += names
    if LOCK_DIR.is_dir():  # locks of labs that died before they made a namespace
        for lock in LOCK_DIR.glob("*.lock"):
            owner_pid = lock.name.split("-")[0]
            if owner_pid.isdigit() and (not _pid_alive(int(owner_pid))
                                        or _lock_held(lock) is False):
                lock.unlink(missing_ok=True)
    return removed


def check_environment() -> None:
    if os.geteuid() != 0:
        raise LabError("lab: network namespaces need root; run the lab as root (e.g. with sudo)")
    missing = [t for t in ("ip", "nft", "ping") if not shutil.which(t)]
    if missing:
        raise LabError(f"lab: {', '.join(missing)} not found; install them with "
                       "`apt-get install -y iproute2 nftables iputils-ping`")


# -- cleanup on exit and on signals ------------------------------------------------------

_live: list[Lab] = []
_saved_handlers: dict[int, Any] = {}
_pending: list[tuple[int, Any]] = []
_atexit_registered = False
_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _register(lab: Lab) -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(_close_all)
        _atexit_registered = True
    if threading.current_thread() is threading.main_thread() and not _saved_handlers:
        for sig in _SIGNALS:
            prev = signal.getsignal(sig)
            if prev is not signal.SIG_IGN:  # (nohup, a background job: leave it ignored)
                _saved_handlers[sig] = prev
                signal.signal(sig, _on_signal)
    if lab not in _live:
        _live.append(lab)


def _unregister(lab: Lab) -> None:
    if lab in _live:
        _live.remove(lab)
    if not _live and _saved_handlers and threading.current_thread() is threading.main_thread():
        for sig, handler in _saved_handlers.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        _saved_handlers.clear()


def _close_all() -> None:
    for lab in list(_live):
        lab.close()


def _on_signal(signum, frame) -> None:
    prev = _saved_handlers.get(signum, signal.SIG_DFL)
    if any(lab._closing for lab in _live):
        _pending.append((signum, prev))  # a close() is running under us: let it finish first
        return
    _close_all()
    _chain(signum, frame, prev)


def _chain(signum, frame, prev) -> None:
    """After cleanup, do what the signal would have done without the lab."""
    if callable(prev):
        prev(signum, frame)  # e.g. Python's SIGINT handler: raises KeyboardInterrupt
    elif prev in (signal.SIG_DFL, None):
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


# -- the lab --------------------------------------------------------------------------

class Lab:
    """A home in network namespaces: build with up(), drive with the set_* switches.

    Every process the lab starts runs in one of its namespaces (`popen`, `run`); close()
    kills every process in those namespaces, whoever started it, then deletes them
    (their links, routes and nftables tables go with them).
    """

    def __init__(self, run_id: str | None = None, *, logdir: str | Path | None = None,
                 seed: int | None = None):
        self.pid = os.getpid()
        self.seed = new_seed() if seed is None else seed  # the loss pattern's (drop_slots)
        self.run_id = run_id or secrets.token_hex(2)
        if not re.fullmatch(r"[a-z0-9]{1,8}", self.run_id):
            raise LabError(f"lab: run id {self.run_id!r}: use 1-8 characters a-z, 0-9")
        self.owner = f"{PREFIX}-{self.pid}-{self.run_id}"
        self.ns = {role: f"{self.owner}-{role}" for role in ROLES}
        self.logdir = Path(logdir) if logdir else None
        self.addresses = {
            "lan": LAN, "netmask": "255.255.255.0",
            "gateway": GATEWAY, "agent": AGENT, "server": SERVER,
            "anchors": list(ANCHORS), "dns": DNS_SERVER, "names": dict(TABLE),
            "wan": {"net": WAN_NET, "router": WAN_ROUTER, "isp": WAN_ISP},
            "tcp_ports": {"anchors": list(ANCHOR_TCP_PORTS), "gateway": list(GATEWAY_TCP_PORTS)},
        }
        self.procs: list[subprocess.Popen] = []
        # (wall-clock ms, switch, value) for every change that took effect: the ground truth.
        self.events: list[tuple[int, str, object]] = []
        self._state: dict[str, Any] = {"power": True, "wan": True, "loss": 0, "dns": True,
                                       "wifi": True}
        self._since: dict[str, int] = {}
        self._lock_fd: int | None = None
        self._switching = threading.RLock()
        self._logs: list[IO] = []
        self._started = False
        self._up = False
        self._closing = False
        self._closed = False

    # -- context manager ----------------------------------------------------------

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- building -----------------------------------------------------------------

    def up(self) -> None:
        """Build the namespaces, links, routes and services; check them with pings."""
        if self._up or self._closed:
            raise LabError("lab: up() may be called once, before close()")
        check_environment()
        self._started = True
        _register(self)
        try:
            cleanup_stale()
            self._take_lock()
            self._build()
            self._start_services()
            self._verify()
        except BaseException:
            self.close()
            raise
        t = now_ms()
        self._since = {key: t for key in self._state}
        self._up = True

    def _take_lock(self) -> None:
        # Held for the lab's life: cleanup_stale() in another process tells by it that
        # this lab is alive even if our pid is ever reused by a later process.
        LOCK_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(LOCK_DIR / f"{self.pid}-{self.run_id}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._lock_fd = fd

    def _check_open(self) -> None:
        if self._closed or self._closing:
            raise LabError("lab: closed")

    def _build(self) -> None:
        ns = self.ns
        _cmd(["ip", "-batch", "-"], input="".join(f"netns add {ns[r]}\n" for r in ROLES))
        for role in ROLES:
            self._check_open()
            # IPv4 only: no IPv6 link-local chatter, no second way out of anything.
            # A new namespace inherits the root namespace's IPv4 settings, forwarding too:
            # set it either way. -e: a kernel without IPv6 has no disable_ipv6 to set.
            sysctls = ["net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1",
                       f"net.ipv4.ip_forward={int(role == 'router')}"]
            _cmd(["ip", "netns", "exec", ns[role], "sysctl", "-q", "-e", "-w", *sysctls])
        # Every veth is created with both ends in lab namespaces: the root namespace
        # never holds, even briefly, an interface of the lab.
        _ip_batch(ns["router"], [
            "link set lo up",
            f"link add {IF_BRIDGE} type bridge",
            f"link add {IF_WIFI} type veth peer name {IF_AGENT} netns {ns['agent']}",
            f"link add {IF_LAN} type veth peer name {IF_SERVER} netns {ns['server']}",
            f"link add {IF_WAN} type veth peer name {IF_UPLINK} netns {ns['isp']}",
            f"link set {IF_WIFI} master {IF_BRIDGE}",
            f"link set {IF_LAN} master {IF_BRIDGE}",
            f"addr add {GATEWAY}/24 dev {IF_BRIDGE}",
            f"addr add {WAN_ROUTER}/30 dev {IF_WAN}",
            *self._router_links("up"),
        ])
        _ip_batch(ns["agent"], [
            "link set lo up",
            f"addr add {AGENT}/24 dev {IF_AGENT}",
            *self._wifi_links("up"),
        ])
        _ip_batch(ns["server"], [
            "link set lo up",
            f"addr add {SERVER}/24 dev {IF_SERVER}",
            f"link set {IF_SERVER} up",
            f"route add default via {GATEWAY} dev {IF_SERVER}",
        ])
        _ip_batch(ns["isp"], [
            "link set lo up",
            *[f"addr add {a}/32 dev lo" for a in (*ANCHORS, DNS_SERVER)],
            f"addr add {WAN_ISP}/30 dev {IF_UPLINK}",
            f"link set {IF_UPLINK} up",
            # Back to the home only; no default route: the lab's internet ends here.
            f"route add {LAN} via {WAN_ROUTER} dev {IF_UPLINK}",
        ])

    @staticmethod
    def _router_links(state: str) -> list[str]:
        lines = [f"link set {i} {state}" for i in (IF_BRIDGE, IF_WIFI, IF_LAN, IF_WAN)]
        if state == "up":
            # Setting wan0 down flushed the routes through it; put the default back.
            lines.append(f"route replace default via {WAN_ISP} dev {IF_WAN}")
        return lines

    @staticmethod
    def _wifi_links(state: str) -> list[str]:
        lines = [f"link set {IF_AGENT} {state}"]
        if state == "up":
            # onlink: valid even while the router is off (no carrier on wlan0).
            lines.append(f"route replace default via {GATEWAY} dev {IF_AGENT} onlink")
        return lines

    def _service(self, ns: str, name: str, argv: list[str]) -> subprocess.Popen:
        """Start one of the lab's own servers and wait for its `ready` line."""
        if self.logdir:
            self.logdir.mkdir(parents=True, exist_ok=True)
            log: IO = open(self.logdir / f"{name}.log", "ab")
        else:
            log = tempfile.TemporaryFile()
        self._logs.append(log)
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]), PYTHONUNBUFFERED="1")
        p = self.popen(ns, [sys.executable, *argv], stdout=subprocess.PIPE, stderr=log, env=env,
                       cwd=str(REPO))
        assert p.stdout is not None
        line = b""
        if select.select([p.stdout], [], [], READY_TIMEOUT_S)[0]:
            line = p.stdout.readline()
        p.stdout.close()
        if not line.startswith(b"ready"):
            log.seek(0)
            err = log.read().decode(errors="replace").strip().splitlines()
            raise LabError(f"lab: {name} did not start in the {ns} namespace: "
                           f"{err[-1] if err else 'no output'}")
        return p

    def _start_services(self) -> None:
        self._check_open()
        here = "bench.lab.topology"
        self._service("isp", "anchors", ["-m", here, "listen",
                                         *[f"{a}:{p}" for a in ANCHORS for p in ANCHOR_TCP_PORTS]])
        self._service("isp", "dnsd", ["-m", "bench.lab.dnsd", "--listen", DNS_SERVER])
        self._service("router", "gateway", ["-m", here, "listen",
                                            *[f"{GATEWAY}:{p}" for p in GATEWAY_TCP_PORTS]])

    def _verify(self) -> None:
        for target in (GATEWAY, ANCHORS[0], SERVER):
            self._check_open()
            for _ in range(3):
                if self.run("agent", ["ping", "-c1", "-W1", "-q", target],
                            capture_output=True).returncode == 0:
                    break
            else:
                raise LabError(f"lab: built, but the agent cannot ping {target}")

    # -- processes ----------------------------------------------------------------

    def _argv(self, ns: str, argv: list[str]) -> list[str]:
        if ns not in self.ns:
            raise ValueError(f"lab: no namespace {ns!r}; one of {', '.join(ROLES)}")
        return ["ip", "netns", "exec", self.ns[ns], *argv]

    def popen(self, ns: str, argv: list[str], **kw) -> subprocess.Popen:
        """Start argv inside namespace ns ('agent'|'router'|'isp'|'server'); killed by close().

        By default in a new session (start_new_session=True), so that a Ctrl-C at the
        terminal reaches the lab, which stops its processes itself, and stdin is /dev/null.
        """
        self._check_open()
        kw.setdefault("start_new_session", True)
        kw.setdefault("stdin", subprocess.DEVNULL)
        # `ip netns exec` execs argv in place: p.pid is argv's own pid.
        p = subprocess.Popen(self._argv(ns, argv), **kw)
        self.procs.append(p)
        return p

    def run(self, ns: str, argv: list[str], **kw) -> subprocess.CompletedProcess:
        """subprocess.run(argv) inside namespace ns."""
        self._check_open()
        return subprocess.run(self._argv(ns, argv), **kw)

    # -- faults ---------------------------------------------------------------------

    def _switch(self, key: str, value: object, apply) -> int:
        """Set one switch; idempotent: if it is already there, return when it got there."""
        with self._switching:  # wan and loss share one ruleset: one change at a time
            self._check_open()
            if not self._up:
                raise LabError("lab: call up() first")
            if self._state[key] == value:
                return self._since[key]
            old = self._state[key]
            self._state[key] = value
            try:
                apply()
            except BaseException:
                self._state[key] = old
                raise
            t = now_ms()  # the command has returned: the change is in force
            self._since[key] = t
            self.events.append((t, key, value))
            return t

    def set_wan(self, up: bool) -> int:
        """The line router<->isp: down drops every packet through wan0, silently (timeouts)."""
        return self._switch("wan", bool(up), self._apply_router_nft)

    def set_loss(self, pct: int) -> int:
        """Random loss on the WAN path: `pct` % of round trips lost (0 removes the rules)."""
        if isinstance(pct, bool) or not isinstance(pct, int) or not 0 <= pct <= 100:
            raise ValueError(f"lab: loss must be an integer 0..100, got {pct!r}")
        return self._switch("loss", pct, self._apply_router_nft)

    def set_dns(self, up: bool) -> int:
        """The resolver: down drops port 53 to 198.51.100.53 in the isp (queries time out)."""
        return self._switch("dns", bool(up), self._apply_isp_nft)

    def set_router(self, on: bool) -> int:
        """Router power: off sets all its links down (LAN and WAN lose carrier)."""
        return self._switch("power", bool(on), lambda: self._power(bool(on)))

    def _power(self, on: bool) -> None:
        _ip_batch(self.ns["router"], self._router_links("up" if on else "down"))
        if on:
            # The stations see the link come back and start afresh, as lwIP does when a
            # netif's link goes up (etharp_cleanup_netif); else a neighbour entry left
            # half-resolved while the router was off delays the first packet by up to
            # a second of ARP retransmit time.
            _ip_batch(self.ns["agent"], [f"neigh flush dev {IF_AGENT}"])
            _ip_batch(self.ns["server"], [f"neigh flush dev {IF_SERVER}"])

    def set_wifi(self, up: bool) -> int:
        """The agent's own link: wlan0 down/up in the agent namespace."""
        return self._switch("wifi", bool(up), lambda: _ip_batch(
            self.ns["agent"], self._wifi_links("up" if up else "down")))

    def router_state(self) -> dict:
        """What the router's LEDs should show; all dark (False) while it is off."""
        power = bool(self._state["power"])
        return {"power": power, "wan": power and bool(self._state["wan"]),
                "loss": int(self._state["loss"]), "dns": bool(self._state["dns"])}

    def switches(self) -> dict:
        """Every switch as last set: power, wan, loss, dns, wifi."""
        return dict(self._state)

    def _nft(self, ns: str, chains: dict[str, tuple[str, list[str]]],
             sets: dict[str, list[int]] | None = None) -> None:
        # One atomic transaction: (create +) delete the table, then recreate it with the
        # rules the switches call for; no rules at all -> no table. (Recreating the loss
        # rules restarts their packet counters: the pattern starts afresh, seeded all
        # the same.)
        text = f"table inet {NFT_TABLE}\ndelete table inet {NFT_TABLE}\n"
        chains = {name: c for name, c in chains.items() if c[1]}
        if chains:
            text += f"table inet {NFT_TABLE} {{\n"
            for name, slots in (sets or {}).items():
                text += (f"  set {name} {{ typeof numgen inc mod {LOSS_SLOTS}; flags constant; "
                         f"elements = {{ {', '.join(map(str, slots))} }} }}\n")
            for name, (hook, rules) in chains.items():
                text += (f"  chain {name} {{\n"
                         f"    type filter hook {hook} priority 0; policy accept;\n"
                         + "".join(f"    {r}\n" for r in rules) + "  }\n")
            text += "}\n"
        _cmd(["ip", "netns", "exec", self.ns[ns], "nft", "-f", "-"], input=text)

    def _apply_router_nft(self) -> None:
        sets: dict[str, list[int]] = {}
        if not self._state["wan"]:
            tail_in = tail_out = "drop"
        elif self._state["loss"]:
            sets, tail_in, tail_out = loss_rules(self.seed, int(self._state["loss"]))
        else:
            tail_in = tail_out = ""
        # ARP is not in the inet family: the neighbour stays resolved, drops stay silent.
        i = f'iifname "{IF_WAN}" {tail_in}' if tail_in else ""
        o = f'oifname "{IF_WAN}" {tail_out}' if tail_out else ""
        self._nft("router", {"forward": ("forward", [r for r in (i, o) if r]),
                             "input": ("input", [i] if i else []),
                             "output": ("output", [o] if o else [])}, sets)

    def _apply_isp_nft(self) -> None:
        rules = [] if self._state["dns"] else [f"ip daddr {DNS_SERVER} udp dport 53 drop",
                                               f"ip daddr {DNS_SERVER} tcp dport 53 drop"]
        self._nft("isp", {"input": ("input", rules)})

    # -- teardown -------------------------------------------------------------------

    def close(self, grace_s: float = 2.0) -> None:
        """Stop every process in the lab's namespaces, delete them; safe to call again."""
        if self._closed or self._closing or os.getpid() != self.pid:
            return  # (a forked child must not tear down its parent's lab)
        if not self._started:
            self._closed = True
            return
        self._closing = True
        try:
            self._stop_procs(grace_s)
            _remove_ns([self.ns[r] for r in ROLES])  # kills what is left, whoever started it
            for p in self.procs:
                try:
                    p.wait(1)
                except subprocess.TimeoutExpired:
                    pass
            for log in self._logs:
                log.close()
            if self._lock_fd is not None:
                (LOCK_DIR / f"{self.pid}-{self.run_id}.lock").unlink(missing_ok=True)
                os.close(self._lock_fd)
                self._lock_fd = None
        finally:
            self._closed = True
            self._closing = False
            _unregister(self)
        if _pending and not any(lab._closing for lab in _live):
            signum, prev = _pending.pop(0)
            _pending.clear()
            _close_all()
            _chain(signum, None, prev)

    def _stop_procs(self, grace_s: float) -> None:
        running = [p for p in self.procs if p.poll() is None]
        for p in running:
            self._signal(p, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for p in running:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(p, signal.SIGKILL)

    @staticmethod
    def _signal(p: subprocess.Popen, sig: int) -> None:
        try:
            if os.getpgid(p.pid) == p.pid:
                os.killpg(p.pid, sig)  # its own session: the children too
            else:
                p.send_signal(sig)
        except (ProcessLookupError, PermissionError):
            pass


# -- `python -m bench.lab.topology listen ADDR:PORT ...`: accept-and-close TCP listeners -----

def _listen(targets: list[str]) -> None:
    sel = selectors.DefaultSelector()
    for t in targets:
        host, _, port = t.rpartition(":")
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, int(port)))
        s.listen(128)
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    ready(" ".join(targets))
    while True:
        for key, _ in sel.select():
            try:
                conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                conn.close()
            except OSError:
                pass


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] == "listen":
        try:
            _listen(argv[1:])
        except KeyboardInterrupt:
            return 0
        except (OSError, ValueError) as e:
            print(f"listen: {e}", file=sys.stderr)
            return 1
    print("usage: python -m bench.lab.topology listen ADDR:PORT [ADDR:PORT ...]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
