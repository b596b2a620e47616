# Driven by bench/dns_stall.py under MicroPython on the virtual board's lwIP-like
# sockets: a WAN outage with an off-site broker name. The broker's name resolves at
# boot (upstream DNS up), then the upstream DNS goes silent (lwIP's lookup: 7 s of
# retries) and the broker refuses (a closed loopback port). For `seconds` it runs what
# shares the agent's event loop: an LED sampler (sleep_ms(20)), a probe round against a
# loopback anchor every second, and the MQTT client reconnecting with its backoff.
# Prints one JSON line: the longest gap between LED samples, the rounds completed, the
# blocking lookups (>= 1 s) and the ms the loop spent in them.
# usage: micropython dns_stall_drive.py CONTROL SECONDS
import sys
if ".frozen" not in sys.path:
    sys.path.append(".frozen")
import json
import os
import time

import board
import lwipsocket

lwipsocket.install()

import asyncio  # noqa: E402
import socket  # noqa: E402

import mqtt  # noqa: E402
import probe  # noqa: E402

CONTROL = sys.argv[1]
SECONDS = int(sys.argv[2])
NAME = "broker.offsite.example"


def control(c):
    with open(CONTROL + ".tmp", "w") as f:
        json.dump(c, f)
    os.rename(CONTROL + ".tmp", CONTROL)
    board._sig_ino = -1
    board._checked = time.ticks_add(time.ticks_ms(), -board.CHECK_MS)
    board.poll()


def free_port(lo):
    for p in range(lo, lo + 200):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(socket.getaddrinfo("127.0.0.1", p)[0][-1])
        except OSError:
            continue
        finally:
            s.close()
        return p
    raise OSError("no free loopback port")


board.setup(CONTROL, None)
control({"hosts": {NAME: "127.0.0.1"}})
lst = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
anchor = free_port(47200)
lst.bind(socket.getaddrinfo("127.0.0.1", anchor)[0][-1])
lst.listen(8)
lst.setblocking(False)
broker = free_port(47400)   # nobody listens: the off-site broker is out of reach
silent = free_port(47600)   # our DNS client's server: no answer either
st = {"gap": 0, "rounds": 0, "stop": False, "attempts": 0}


async def sampler():
    last = time.ticks_ms()
    while not st["stop"]:
        await asyncio.sleep_ms(20)
        now = time.ticks_ms()
        st["gap"] = max(st["gap"], time.ticks_diff(now, last))
        last = now


async def prober():
    while not st["stop"]:
        t0 = time.ticks_ms()
        r = await probe.probe_round({"anchors": ["127.0.0.1:%d" % anchor]}, 1000)
        st["rounds"] += r["anchors_ok"] == 1
        while True:
            try:
                a, _ = lst.accept()
                a.close()
            except OSError:
                break
        await asyncio.sleep_ms(max(0, 1000 - time.ticks_diff(time.ticks_ms(), t0)))


async def resolver(name):
    return await probe.resolve("127.0.0.1", name, 2000, silent)


class Counted(mqtt.Client):
    async def connect(self):
        st["attempts"] += 1
        await super().connect()


async def main():
    c = Counted(NAME, broker, client_id="bench")
    try:
        await c.connect()  # the boot: the name resolves (20 ms), the broker refuses
    except OSError:
        pass
    c.resolver = resolver  # an attribute the client before the fix never reads
    control({"hosts": {NAME: "127.0.0.1"}, "dns": "down"})
    n0, ms0 = lwipsocket.blocking_lookups, lwipsocket.blocked_ms
    st["gap"] = 0
    tasks = [asyncio.create_task(sampler()), asyncio.create_task(prober()),
             asyncio.create_task(c.run_forever())]
    await asyncio.sleep_ms(SECONDS * 1000)
    st["stop"] = True
    for t in tasks:
        t.cancel()
    await asyncio.sleep_ms(50)
    print(json.dumps({"gap_ms": st["gap"], "rounds": st["rounds"], "seconds": SECONDS,
                      "blocking_lookups": lwipsocket.blocking_lookups - n0,
                      "blocked_ms": lwipsocket.blocked_ms - ms0,
                      "connects": st["attempts"], "last_error": c.last_error}))


asyncio.run(main())
lst.close()
