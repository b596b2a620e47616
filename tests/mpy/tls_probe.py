# Drives agent/mqtt.py's Client over TLS (or plain MQTT) against a broker on loopback,
# for tests/test_tls.py and bench/tls_heap.py, which start this under MicroPython and
# read its output: one event per line, "EV <name> key=value ...".
#
# usage: micropython tls_probe.py host=H port=N [ca=FILE] [user=U] [password=P]
#        [topic=T] [n=N] [secs=S]
#   ca: the broker's CA certificate (PEM file): TLS, verified against it; none = plain.
#   Connects, publishes n QoS 1 messages to topic, reports heap figures and disconnects;
#   a connection that keeps failing is reported at every attempt ("backoff") for secs s.
import gc
import sys

if ".frozen" not in sys.path:
    sys.path.append(".frozen")

import asyncio  # noqa: E402
from time import ticks_diff, ticks_ms  # noqa: E402

import config  # noqa: E402
import mqtt  # noqa: E402

ARGS = {"host": "127.0.0.1", "port": "1883", "ca": "", "user": "", "password": "",
        "topic": "wanwitness/probe/hb", "n": "3", "secs": "20"}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    ARGS[k] = v
T0 = ticks_ms()


def ev(name, *kv):
    print("EV", name, "t=%d" % ticks_diff(ticks_ms(), T0), *kv)


def free():
    gc.collect()
    return gc.mem_free()


def rss_kb():
    # The process's resident memory: mbedTLS allocates with the C heap on the unix port
    # (as on an ESP32, where it is the IDF heap), which gc.mem_free does not see.
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return -1


class Probe(mqtt.Client):
    backoff_min_ms = 200
    backoff_max_ms = 1000

    def backoff_ms(self, fails):
        ev("backoff", "fails=%d" % fails, "err=%s" % (self.last_error or "-").replace(" ", "_"))
        return super().backoff_ms(fails)


async def main():
    f0 = free()
    tls = None
    if ARGS["ca"]:
        with open(ARGS["ca"]) as fh:
            der = config.pem_der(fh.read())
        if der is None:
            ev("bad_ca")
            return
        tls = mqtt.tls_context(der)
        der = None
    f1 = free()
    r1 = rss_kb()
    c = Probe(ARGS["host"], int(ARGS["port"]), "probe-" + (ARGS["user"] or "anon"),
              ARGS["user"] or None, ARGS["password"] or None, 30, None, True, tls)
    runner = asyncio.create_task(c.run_forever())
    deadline = int(ARGS["secs"]) * 1000
    while not c.connected:
        if ticks_diff(ticks_ms(), T0) > deadline:
            ev("gave_up", "connects=%d" % c.connects)
            runner.cancel()
            return
        await asyncio.sleep_ms(20)
    f2 = free()
    r2 = rss_kb()
    ev("connected", "tls=%d" % (tls is not None))
    for i in range(int(ARGS["n"])):
        ok = await c.publish(ARGS["topic"], b'{"probe":%d}' % i, 1, False, 10000)
        ev("puback" if ok else "no_puback", "i=%d" % i)
    f3 = free()
    # Heap figures (bytes of the GC heap): the context with the CA, a live connection.
    ev("heap", "context=%d" % (f0 - f1), "session=%d" % (f1 - f2), "after_publish=%d" % (f1 - f3),
       "rss_kb=%d" % (r2 - r1))
    await c.disconnect()
    runner.cancel()
    await asyncio.sleep_ms(50)
    ev("done", "closed_free=%d" % (f1 - free()))


asyncio.run(main())
