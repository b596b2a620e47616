# Driven by tests/test_agent_probe_net.py: runs one probe / SNTP exchange on
# MicroPython against real sockets and prints "RESULT <json>".
#   micropython probe_drive.py <command> '<json args>'
# Commands: icmp, tcp, dns, round, sntp. With "ticker": true a 20 ms task runs
# alongside (the LED sampler's rhythm) and its largest gap is reported.
import sys
if ".frozen" not in sys.path:
    sys.path.append(".frozen")

import asyncio
import json
import time

import clock
import probe


def out(obj):
    print("RESULT " + json.dumps(obj))


async def with_ticker(coro, on):
    stats = {"max_gap": 0, "ticks": 0}
    if not on:
        return await coro, stats
    stop = [False]

    async def ticker():
        last = time.ticks_ms()
        while not stop[0]:
            await asyncio.sleep_ms(20)
            now = time.ticks_ms()
            gap = time.ticks_diff(now, last)
            if gap > stats["max_gap"]:
                stats["max_gap"] = gap
            stats["ticks"] += 1
            last = now

    t = asyncio.create_task(ticker())
    await asyncio.sleep_ms(40)
    try:
        r = await coro
    finally:
        await asyncio.sleep_ms(40)
        stop[0] = True
        await t
    return r, stats


async def main(cmd, a):
    t0 = time.ticks_ms()
    if cmd == "icmp":
        try:
            rtt = await probe.icmp(a["addr"], a["timeout"])
            res = {"rtt": rtt}
        except OSError as e:
            res = {"rtt": None, "oserror": e.args[0]}
    elif cmd == "tcp":  # a one-target round: its entry carries the reason
        tg = "%s:%d" % (a["addr"], a["port"])
        r = await probe.probe_round({"anchors": [tg]}, a["timeout"])
        res = r["results"][tg]
        res["ms"] = time.ticks_diff(time.ticks_ms(), t0)
        res["plain"] = await probe.tcp(a["addr"], a["port"], a["timeout"])  # the contract API
    elif cmd == "dns":
        tg = "%s:%d" % (a["server"], a["port"])
        r = await probe.probe_round({"dns": tg, "dns_name": a["name"]}, a["timeout"],
                                    a.get("tries", 5))
        res = r["results"]["dns:" + tg]
        res["addrs"] = res.get("addrs")
        res["tries"] = r["dns_tries"]
    elif cmd == "round":
        res, stats = await with_ticker(probe.probe_round(a["targets"], a["timeout"]), a.get("ticker"))
        res.update(stats)
    elif cmd == "sntp":
        c = clock.Clock()
        r = await clock.sntp(c, a["server"], a["timeout"], port=a["port"])
        res = {"ok": r is not None, "err": c.last_error}
        if r is not None:
            res["utc"], res["rtt"] = r
            # the agent's UTC and the host's wall clock at the same instant
            res["clock_utc"] = c.utc_ms()
            res["host_ms"] = time.time_ns() // 1000000
    else:
        raise ValueError("unknown command " + cmd)
    if "ms" not in res:
        res["ms"] = time.ticks_diff(time.ticks_ms(), t0)
    return res


out(asyncio.run(main(sys.argv[1], json.loads(sys.argv[2]))))
