"""Agent heap cost of MQTT over TLS: the agent's MQTT client on MicroPython, TLS vs plain.

One embedded broker (127.0.0.1, a plain and a TLS listener, certificates made the way
`wanwitness broker tls init` makes them) and tests/mpy/tls_probe.py under the
`micropython` binary (unix port, the compiled agent, `-X heapsize`). The probe measures
with `gc.collect(); gc.mem_free()`:

- context: the SSLContext with the CA loaded (made once at start; 0 for plain);
- session: the Client object plus a live connection (after CONNACK and SUBACK-free
  start), the TLS socket and mbedTLS's buffers included;
- after publish: the same after 3 QoS 1 publishes went through;
- rss_kb: how much the process's resident memory grew over the connection (KiB, the
  median of 5 runs): the C heap, where mbedTLS keeps its session and record buffers.

It also finds the smallest heap (in steps of 4 KiB) with which the probe connects and
publishes, plain and TLS.

    .venv/bin/python -m bench.tls_heap [--heap 64K] [--json OUT]

On the unix port mbedTLS allocates from MicroPython's GC heap (m_tracked_calloc,
extmod/mbedtls/mbedtls_config_common.h), so these figures include it. On an ESP32
mbedTLS uses the ESP-IDF heap outside the GC heap instead (about 20 KB per connection,
micropython issues #6065), so there the GC heap pays only the Python side. The unix port
is 64-bit: Python objects take up to twice an ESP32's bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import tempfile
from pathlib import Path

from testing.mpy import micropython, mpy_path
from wanwitness.broker.embedded import EmbeddedBroker, TlsListener
from wanwitness.broker.tls import init_tls

ROOT = Path(__file__).resolve().parent.parent
PROBE = ROOT / "tests" / "mpy" / "tls_probe.py"
USER, PASSWORD = "bench", "bench-password"
RUNS = 5


def probe(port: int, ca: Path | None, heap: str) -> dict[str, int] | None:
    """The probe's heap figures, None if it did not connect and publish."""
    args = [f"port={port}", f"user={USER}", f"password={PASSWORD}", "secs=10",
            f"topic=wanwitness/{USER}/hb"]
    if ca is not None:
        args.append(f"ca={ca}")
    env = dict(os.environ, MICROPYPATH=mpy_path())
    proc = subprocess.run([micropython(), "-X", f"heapsize={heap}", str(PROBE), *args],
                          cwd=str(PROBE.parent), env=env, capture_output=True, text=True, timeout=60)
    figures: dict[str, int] = {}
    pubacks = 0
    for line in proc.stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["EV", "heap"]:
            figures = {k: int(v) for k, v in (p.split("=", 1) for p in parts[2:]) if k != "t"}
        elif parts[:2] == ["EV", "puback"]:
            pubacks += 1
    return figures if pubacks == 3 and figures else None


def smallest_heap(port: int, ca: Path | None, start_k: int = 16, stop_k: int = 128) -> int | None:
    for k in range(start_k, stop_k + 1, 4):
        if probe(port, ca, f"{k}K") is not None:
            return k
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heap", default="64K", help="MicroPython heap for the figures (default 64K)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ww-tls-heap-") as tmp:
        files, _ = init_tls(Path(tmp) / "tls")
        broker = EmbeddedBroker("127.0.0.1", 0, lambda u, p: "agent" if (u, p) == (USER, PASSWORD) else None,
                                tls=TlsListener("127.0.0.1", 0, files.cert, files.key))
        with broker:
            assert broker.tls is not None
            result: dict[str, object] = {"heap": args.heap}
            for name, port, ca in (("plain", broker.port, None), ("tls", broker.tls.port, files.ca_cert)):
                runs = [probe(port, ca, args.heap) for _ in range(RUNS)]
                if any(figures is None for figures in runs):
                    raise SystemExit(f"the {name} probe did not connect and publish with a {args.heap} heap")
                figures = dict(runs[0] or {})
                # RSS moves by whole pages and with the allocator's mood: the median of the runs.
                figures["rss_kb"] = int(statistics.median(f["rss_kb"] for f in runs if f))
                result[name] = figures
                result[name + "_smallest_heap_k"] = smallest_heap(port, ca)
    plain, tls = result["plain"], result["tls"]
    assert isinstance(plain, dict) and isinstance(tls, dict)
    print(f"MicroPython unix port, -X heapsize={args.heap}; bytes of GC heap (gc.mem_free deltas)")
    print(f"{'':24}{'plain':>10}{'TLS':>10}{'TLS cost':>10}")
    for key, label in (("context", "SSLContext + CA"), ("session", "client + connection"),
                       ("after_publish", "after 3 QoS 1 publishes")):
        print(f"{label:24}{plain[key]:>10}{tls[key]:>10}{tls[key] - plain[key]:>10}")
    print("C heap (mbedTLS; process RSS growth over the connection, KiB):")
    print(f"{'client + connection':24}{plain['rss_kb']:>10}{tls['rss_kb']:>10}"
          f"{tls['rss_kb'] - plain['rss_kb']:>10}")
    print(f"{'smallest heap (KiB)':24}{result['plain_smallest_heap_k']!s:>10}"
          f"{result['tls_smallest_heap_k']!s:>10}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
