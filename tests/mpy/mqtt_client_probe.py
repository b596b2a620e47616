# Drives agent/mqtt.py's Client against a broker on 127.0.0.1, for
# tests/test_agent_mqtt_client.py (CPython), which starts this under MicroPython and
# reads its output: one event per line, "EV <name> key=value ...".
#
# usage: micropython mqtt_client_probe.py mode=<basic|reconnect|pub1|idle> port=N
#        [id=...] [prefix=...] [ka=seconds] [retry=ms] [secs=N] [user=... pw=...] [topic=...]
#        [at=1] [others=PORT,PORT] [bmax=ms]
#   basic      will + retained subscribe + QoS 1 publishes + heap figures, then idles
#   reconnect  waits for the broker to vanish, publishes QoS 1 while it is gone, and
#              reports the reconnect and the PUBACK
#   pub1       one QoS 1 publish, reports when/if it is acknowledged (scripted brokers);
#              at=1: with publish_at, the payload in a buffer of its own between other bytes
#   idle       stays connected for secs seconds, reporting connects and errors
#   others     more brokers on 127.0.0.1 (mqtt.Client's failover), tried in turn
import gc
import sys

if ".frozen" not in sys.path:
    sys.path.append(".frozen")

gc.collect()
HEAP0 = gc.mem_alloc()
import asyncio  # noqa: E402
from time import ticks_diff, ticks_ms  # noqa: E402

gc.collect()
HEAP1 = gc.mem_alloc()
import mqtt  # noqa: E402

gc.collect()
HEAP2 = gc.mem_alloc()

ARGS = {"mode": "basic", "port": "1883", "id": "probe", "prefix": "ww", "ka": "30",
        "retry": "10000", "secs": "10"}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    ARGS[k] = v
T0 = ticks_ms()


def ev(name, *kv):
    print("EV", name, "t=%d" % ticks_diff(ticks_ms(), T0), *kv)


class Probe(mqtt.Client):
    def backoff_ms(self, fails):
        d = super().backoff_ms(fails)
        ev("backoff", "fails=%d" % fails, "ms=%d" % d, "err=%s" % (self.last_error or "-").replace(" ", "_"))
        return d


LATE = [0]


async def sampler():
    # Stands in for the LED sampler: runs every 20 ms; records the worst lateness.
    due = ticks_ms()
    while True:
        due += 20
        await asyncio.sleep_ms(max(0, ticks_diff(due, ticks_ms())))
        late = ticks_diff(ticks_ms(), due)
        if late > LATE[0]:
            LATE[0] = late


def make_client(will=None):
    others = tuple(("127.0.0.1", int(p)) for p in ARGS["others"].split(",")) if "others" in ARGS else ()
    c = Probe("127.0.0.1", int(ARGS["port"]), ARGS["id"], ARGS.get("user"), ARGS.get("pw"),
              int(ARGS["ka"]), will, others=others)
    c.retry_ms = int(ARGS["retry"])
    if "bmax" in ARGS:  # a shorter backoff ceiling, for tests that go round several brokers
        c.backoff_max_ms = int(ARGS["bmax"])
    c.on_message = lambda t, m: ev("msg", "topic=" + t, "hex=" + "".join("%02x" % x for x in m))
    c.on_connect = lambda sp: ev("connected", "n=%d" % (c.connects), "sp=%d" % sp, "port=%d" % c.port)
    return c


async def wait(cond, ms):
    t = ticks_ms()
    while not cond():
        if ticks_diff(ticks_ms(), t) > ms:
            return False
        await asyncio.sleep_ms(20)
    return True


async def basic():
    p = ARGS["prefix"] + "/" + ARGS["id"]
    will = (p + "/status", "offline", True, 1)
    topics = (p + "/ack", p + "/status", p + "/rec", p + "/hb")
    gc.collect()
    heap3 = gc.mem_alloc()
    c = make_client(will)
    gc.collect()
    heap4 = gc.mem_alloc()
    asyncio.create_task(c.run_forever())
    await c.wait_connected()
    granted = await c.subscribe(topics[0], 1)
    ev("subscribed", "granted=%s" % granted)
    ok = await c.publish(topics[1], b"online", 1, True, 5000)
    ev("puback", "topic=status", "ok=%s" % ok)
    ok = await c.publish(topics[2], b'{"v": 1, "recs": []}', 1, False, 5000)
    ev("puback", "topic=rec", "ok=%s" % ok)
    ok = await c.publish(topics[3], b'{"up": 1}', 0)
    ev("published", "topic=hb", "ok=%s" % ok)
    await asyncio.sleep_ms(300)
    gc.collect()
    heap5 = gc.mem_alloc()
    # module: mqtt's code in RAM (a .mpy; ~0 when frozen); client: Client(); session:
    # what one connection adds (socket, stream, tasks, subscription, in-flight state).
    ev("heap", "asyncio=%d" % (HEAP1 - HEAP0), "module=%d" % (HEAP2 - HEAP1),
       "client=%d" % (heap4 - heap3), "session=%d" % (heap5 - heap4),
       "steady=%d" % (heap5 - heap3), "free=%d" % gc.mem_free())
    # Allocation while connected and idle (supervisor ticks, sampler): GC off for 2 s.
    gc.collect()
    gc.disable()
    a = gc.mem_alloc()
    await asyncio.sleep_ms(2000)
    b = gc.mem_alloc()
    gc.enable()
    ev("idle_alloc", "bytes=%d" % (b - a), "ms=2000")
    ev("sampler", "max_late_ms=%d" % LATE[0])
    ev("ready")
    while True:
        await asyncio.sleep_ms(1000)


async def reconnect():
    p = ARGS["prefix"] + "/" + ARGS["id"]
    c = make_client((p + "/status", "offline", True, 1))
    asyncio.create_task(c.run_forever())
    await c.wait_connected()
    await c.subscribe(p + "/echo", 1)
    ev("ready")
    await wait(lambda: not c.connected, 60000)
    ev("down", "err=%s" % (c.last_error or "-").replace(" ", "_"))
    LATE[0] = 0
    t = ticks_ms()
    task = asyncio.create_task(c.publish(p + "/echo", b"while-down", 1, True))
    await asyncio.sleep_ms(50)
    ev("published_while_down", "inflight=%d" % c.inflight(), "connected=%d" % c.connected)
    await c.wait_connected()
    ev("reconnected", "after_ms=%d" % ticks_diff(ticks_ms(), t), "connects=%d" % c.connects)
    ok = await task
    ev("puback", "topic=echo", "ok=%s" % ok, "after_ms=%d" % ticks_diff(ticks_ms(), t))
    await asyncio.sleep_ms(1000)
    ev("sampler", "max_late_ms=%d" % LATE[0])
    ev("done")


async def pub1():
    c = make_client()
    asyncio.create_task(c.run_forever())
    await c.wait_connected()
    t = ticks_ms()
    topic = ARGS.get("topic", "t/1")
    if ARGS.get("at"):
        k = mqtt.publish_room(topic) + 3  # more room than the header needs
        buf = bytearray(b"\xee" * (k + 8))  # and bytes after the payload: neither is sent
        buf[k:k + 2] = b"m1"
        ok = await c.publish_at(buf, k, 2, topic, False, 20000)
    else:
        ok = await c.publish(topic, b"m1", 1, False, 20000)
    ev("puback", "ok=%s" % ok, "after_ms=%d" % ticks_diff(ticks_ms(), t), "connects=%d" % c.connects)
    ev("done")


async def idle():
    c = make_client()
    asyncio.create_task(c.run_forever())
    await asyncio.sleep_ms(int(ARGS["secs"]) * 1000)
    ev("done", "connects=%d" % c.connects)


async def main():
    asyncio.create_task(sampler())
    await {"basic": basic, "reconnect": reconnect, "pub1": pub1, "idle": idle}[ARGS["mode"]]()


asyncio.run(main())
