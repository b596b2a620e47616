# The virtual board's lwIP-like networking (lwipsocket.py, network.py) and the agent on
# it: a name lookup blocks as lwip_getaddrinfo does, a refused connect reads back as
# ENOTCONN, UDP never sees ECONNREFUSED, the access point's loss is noticed after the
# beacon timeout, modem sleep delays replies. And what the agent does about it: mqtt.py
# keeps the broker's last good address and never blocks the loop on a lookup, refused
# connects are reported as refused (mqtt.py, probe.py), net.py turns modem sleep off.
# Real sockets on loopback only.
import sys
if ".frozen" not in sys.path:
    sys.path.append(".frozen")  # asyncio is frozen into the unix port

import json
import os
import time

import board
import lwipsocket
import mpyunit
import network
from mpyunit import eq, raises

lwipsocket.install()  # before the agent's modules import `socket`, as run.py does

import asyncio  # noqa: E402
import errno  # noqa: E402
import socket  # noqa: E402

import mqtt  # noqa: E402
import net  # noqa: E402
import probe  # noqa: E402

TMP = "/tmp/wanwitness-lwip-%s" % os.urandom(4).hex()
CONTROL = TMP + "-control.json"


def control(c):
    with open(CONTROL + ".tmp", "w") as f:
        json.dump(c, f)
    os.rename(CONTROL + ".tmp", CONTROL)
    board._sig_ino = -1  # re-read at the next poll, whatever the clock's granularity
    board._checked = time.ticks_add(time.ticks_ms(), -board.CHECK_MS)
    board.poll()


def fresh(c):
    board.setup(CONTROL, None)
    network._ifaces.clear()
    control(c)


def ms_since(t0):
    return time.ticks_diff(time.ticks_ms(), t0)


def closed_port():
    # a loopback port nobody listens on (bindable now, so nothing holds it)
    for p in range(47001, 47100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", p)[0][-1])
        except OSError:
            continue
        finally:
            s.close()
        return p
    raise AssertionError("no free loopback port")


def listener():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    p = closed_port()
    s.bind(socket.getaddrinfo("127.0.0.1", p)[0][-1])
    s.listen(4)
    return s, p


# ---------------------------------------------------------------- getaddrinfo

def test_name_lookup_blocks_for_the_resolver_time():
    fresh({"hosts": {"broker.lab": "127.0.0.1"}, "dns_ms": 20})
    eq(lwipsocket.DNS_FAIL_MS, 7000)  # lwIP: 1+1+2+3 s for one server
    n = lwipsocket.lookups
    t0 = time.ticks_ms()
    ai = socket.getaddrinfo("127.0.0.1", 1883)  # numeric: parsed, no lookup
    assert ms_since(t0) < 10, ms_since(t0)
    eq(lwipsocket.lookups, n)
    t0 = time.ticks_ms()
    eq(socket.getaddrinfo("broker.lab", 1883)[0][-1], ai[0][-1])
    took = ms_since(t0)
    assert 18 <= took < 200, took
    # upstream DNS silent: the caller waits the whole retry time, then OSError(-202)
    control({"hosts": {"broker.lab": "127.0.0.1"}, "dns": "down", "dns_fail_ms": 400})
    t0 = time.ticks_ms()
    e = raises(OSError, socket.getaddrinfo, "broker.lab", 1883)
    took = ms_since(t0)
    assert took >= 395, took
    eq(e.args[0], -202)
    # a name nobody knows fails after the resolver time, never by asking the host's DNS
    control({"dns_ms": 20})
    raises(OSError, socket.getaddrinfo, "no-such.example", 80)


# ---------------------------------------------------------------- refused / UDP

def test_refused_tcp_connect_reads_back_as_enotconn():
    fresh({})
    p = closed_port()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(False)
    sa = socket.getaddrinfo("127.0.0.1", p)[0][-1]
    e = raises(OSError, s.connect, sa)
    eq(e.args[0], errno.EINPROGRESS)
    time.sleep_ms(50)
    e = raises(OSError, s.connect, sa)
    eq(e.args[0], errno.ENOTCONN)  # not ECONNREFUSED
    e = raises(OSError, s.write, b"x")
    eq(e.args[0], errno.ENOTCONN)
    s.close()


def test_udp_never_gets_econnrefused():
    fresh({})
    p = closed_port()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.setblocking(False)
    u.connect(socket.getaddrinfo("127.0.0.1", p)[0][-1])
    for _ in range(3):
        eq(u.send(b"q"), 1)
        time.sleep_ms(20)
        e = raises(OSError, u.recv, 64)
        eq(e.args[0], errno.EAGAIN)  # the ICMP port unreachable is ignored
    u.close()
    # so our DNS probe at a dead server times out instead of failing fast
    t0 = time.ticks_ms()
    eq(asyncio.run(probe.dns("127.0.0.1", "example.com", 300, p)), None)
    assert ms_since(t0) >= 290, ms_since(t0)


def test_refused_connect_classified_refused_by_probe():
    fresh({})
    p = closed_port()
    r = asyncio.run(probe.probe_round({"anchors": ["127.0.0.1:%d" % p]}, 1000))
    e = r["results"]["127.0.0.1:%d" % p]
    eq(e["ok"], False)
    eq(e["err"], probe.REFUSED)


def test_refused_connect_reported_refused_by_mqtt():
    fresh({})
    p = closed_port()
    c = mqtt.Client("127.0.0.1", p, client_id="t")
    e = raises(OSError, asyncio.run, c.connect())
    eq(e.args[0], errno.ECONNREFUSED)
    assert "refused" in str(e), str(e)


# ---------------------------------------------------------------- the broker's name

def test_unresolvable_broker_name_never_stalls_the_loop():
    # The broker's name resolved at boot; then the WAN goes: the broker refuses (it is
    # off-site, here a closed port) and the upstream DNS is silent for 10 s. The old
    # client dropped its address after 3 failed connects and called getaddrinfo: 7 s
    # with the only task blocked. Now the LED sampler and the probe rounds keep running.
    fresh({"hosts": {"broker.lab": "127.0.0.1"}})
    lst, lp = listener()  # a probe anchor that answers
    bp = closed_port()
    silent = closed_port()  # our DNS client's server: no answer (UDP, no ECONNREFUSED)

    async def resolver(name):
        return await probe.resolve("127.0.0.1", name, 300, silent)

    c = mqtt.Client("broker.lab", bp, client_id="t")
    c.backoff_min_ms = 50
    c.backoff_max_ms = 200
    # the boot: the name comes from getaddrinfo while the WAN is up (~20 ms)
    st = {"gap": 0, "rounds": 0, "stop": False}

    async def sampler():
        last = time.ticks_ms()
        while not st["stop"]:
            await asyncio.sleep_ms(20)
            now = time.ticks_ms()
            st["gap"] = max(st["gap"], time.ticks_diff(now, last))
            last = now

    async def prober():
        while not st["stop"]:
            r = await probe.probe_round({"anchors": ["127.0.0.1:%d" % lp]}, 500)
            if r["anchors_ok"] == 1:
                st["rounds"] += 1
            try:
                a, _ = lst.accept()
                a.close()
            except OSError:
                pass
            await asyncio.sleep_ms(200)

    async def main():
        lst.setblocking(False)
        try:
            await c.connect()
        except OSError:
            pass  # refused: but the address is known now
        assert c._addr is not None
        c.resolver = resolver
        control({"hosts": {"broker.lab": "127.0.0.1"}, "dns": "down"})
        lk = lwipsocket.blocking_lookups
        tasks = [asyncio.create_task(sampler()), asyncio.create_task(prober()),
                 asyncio.create_task(c.run_forever())]
        await asyncio.sleep_ms(10000)
        st["stop"] = True
        await c.disconnect()
        for t in tasks:
            t.cancel()
        return lwipsocket.blocking_lookups - lk

    blocking = asyncio.run(main())
    lst.close()
    eq(blocking, 0)
    assert st["gap"] < 100, "the LED sampler stalled %d ms" % st["gap"]
    assert st["rounds"] >= 10, "only %d probe rounds in 10 s" % st["rounds"]
    assert c._addr is not None  # the last good address is kept
    assert "refused" in (c.last_error or ""), c.last_error


def test_broker_name_re_resolved_by_the_resolver_when_it_answers():
    # After addr_retries failures the name is looked up again (not dropped): a resolver
    # that answers moves the client to the new address without a blocking lookup.
    fresh({"hosts": {"broker.lab": "127.0.0.1"}})
    bp = closed_port()
    c = mqtt.Client("broker.lab", bp, client_id="t")
    asked = []

    async def resolver(name):
        asked.append(name)
        return ["127.0.0.2"]

    async def main():
        for _ in range(c.addr_retries):
            try:
                await c.connect()
            except OSError:
                pass
        c.resolver = resolver
        n = lwipsocket.lookups
        try:
            await c.connect()
        except OSError:
            pass
        return lwipsocket.lookups - n

    eq(asyncio.run(main()), 0)
    eq(asked, ["broker.lab"])
    eq(c._addr[1], socket.getaddrinfo("127.0.0.2", bp)[0][-1])


# ---------------------------------------------------------------- Wi-Fi

def wait_until(fn, ms):
    t0 = time.ticks_ms()
    while ms_since(t0) < ms:
        if fn():
            return True
        time.sleep_ms(10)
    return fn()


def test_beacon_timeout_delays_the_link_loss():
    eq(network.BEACON_TIMEOUT_MS, 6000)
    eq(network.RECONNECT_MS, 2000)
    fresh({"wifi": "up", "connect_ms": 20, "beacon_timeout_ms": 600, "reconnect_ms": 500})
    w = network.WLAN(network.STA_IF)
    w.active(True)
    try:
        w.connect("home", "pw")
        assert wait_until(w.isconnected, 500)
        t0 = time.ticks_ms()
        control({"wifi": "down", "connect_ms": 20, "beacon_timeout_ms": 600,
                 "reconnect_ms": 500})
        time.sleep_ms(300)
        eq(w.isconnected(), True)  # no beacon for 300 ms: not noticed yet
        assert wait_until(lambda: not w.isconnected(), 1000)
        took = ms_since(t0)
        assert 580 <= took < 900, took
        eq(w.status(), network.STAT_BEACON_TIMEOUT)
        control({"wifi": "up", "connect_ms": 20, "beacon_timeout_ms": 600,
                 "reconnect_ms": 500})
        t0 = time.ticks_ms()
        assert wait_until(w.isconnected, 3000)
        took = ms_since(t0)
        assert took >= 450, took  # a reconnect takes reconnect_ms, not connect_ms
    finally:
        w.active(False)


def test_default_beacon_timeout_keeps_the_link_for_seconds():
    fresh({"wifi": "up", "connect_ms": 20})
    w = network.WLAN(network.STA_IF)
    w.active(True)
    try:
        w.connect("home", "pw")
        assert wait_until(w.isconnected, 500)
        control({"wifi": "down", "connect_ms": 20})
        time.sleep_ms(1500)
        eq(w.isconnected(), True)  # the AP is gone, the station will know after 6 s
    finally:
        w.active(False)


# ---------------------------------------------------------------- modem sleep

def tcp_rtt():
    lst, lp = listener()
    try:
        return asyncio.run(probe.tcp("127.0.0.1", lp, 1000))
    finally:
        lst.close()


def test_modem_sleep_delays_replies_until_pm_none():
    fresh({"wifi": "up", "connect_ms": 20})
    w = network.WLAN(network.STA_IF)
    w.active(True)
    try:
        eq(w.config("pm"), network.WLAN.PM_PERFORMANCE)  # the esp32 port's default
        eq(lwipsocket.pm_ms(), 200)
        rtt = tcp_rtt()
        assert rtt is not None and 190 <= rtt < 400, rtt
        w.config(pm=network.WLAN.PM_NONE)
        rtt = tcp_rtt()
        assert rtt is not None and rtt < 50, rtt
    finally:
        w.active(False)


def test_net_turns_modem_sleep_off():
    fresh({"wifi": "up", "connect_ms": 20})
    n = net.Net("home", "pw")
    eq(n.wlan.config("pm"), network.WLAN.PM_PERFORMANCE)

    async def main():
        t = asyncio.create_task(n.keep(lambda: None))
        for _ in range(100):
            if n.up():
                break
            await asyncio.sleep_ms(20)
        t.cancel()

    asyncio.run(main())
    eq(n.up(), True)
    eq(n.wlan.config("pm"), network.WLAN.PM_NONE)
    eq(lwipsocket.pm_ms(), 0)
    n.wlan.active(False)


def test_net_pm_off_on_a_port_without_pm_none():
    fresh({"wifi": "up"})
    n = net.Net("home", "pw")
    pm = network.WLAN.PM_NONE
    delattr(network.WLAN, "PM_NONE")
    try:
        n.pm_off()  # nothing to set, nothing raised
        eq(n.wlan.config("pm"), network.WLAN.PM_PERFORMANCE)
    finally:
        network.WLAN.PM_NONE = pm


def test_a_closed_socket_polls_as_pollnval_and_wakes_its_waiting_task():
    # ports/esp32/modsocket.c: a socket whose fd is closed answers MP_STREAM_POLL with
    # MP_STREAM_POLL_NVAL; asyncio wakes the task parked on it, whose read then fails
    # (EBADF). The board raised ValueError from inside the poll instead, out of asyncio's
    # loop: the crash (and watchdog reset) of a 56K soak at a router-off onset.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.close()
    eq(s.ioctl(3, 1), 0x20)
    got = []

    async def reader():
        await probe._wait_read(s)
        try:
            s.recv(16)
        except OSError as e:
            got.append(e.errno)

    asyncio.run(asyncio.wait_for_ms(reader(), 1000))
    eq(got, [errno.EBADF])


def test_a_dns_reply_whose_socket_is_closed_under_it_ends_quietly():
    # A query given up with its round closes its socket; the reply task parked on it
    # wakes (POLLNVAL) and must end, not raise EBADF where nobody retrieves it (a
    # "Task exception wasn't retrieved" traceback printed into a full heap, the soak).
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)

    async def main():
        t = asyncio.create_task(probe._dns_reply(s, 0x1234, "example.test"))
        await asyncio.sleep_ms(30)
        s.close()
        return await asyncio.wait_for_ms(t, 1000)

    eq(asyncio.run(main()), None)


def test_zz_cleanup():
    for p in (CONTROL, CONTROL + ".tmp"):
        try:
            os.remove(p)
        except OSError:
            pass


mpyunit.main(globals())
