"""Page load times of the web UI over a year of data.

Builds a store with `--agents` agents (3) and `--days` days (365) of history through
the real ingest path: an hourly heartbeat (agents registered with hb_s 3600, the
longest period the protocol allows, so the timeline sees a witness that never went
silent without 1 million heartbeats), a boot a week, and `--outages-per-day` outages
a day at random times (isp_down, dns_down, local_down, degraded; seconds to hours).
Then serves the web UI on a loopback port (uvicorn, as `collect` does) and times each
page and API call `--repeat` times with a real HTTP client: the first (cold) load and
the median and max of the rest.

    .venv/bin/python -m bench.web_load [--agents 3] [--days 365] [--db URL] [--json OUT]

Loopback only; a temporary SQLite store unless --db names one (it must be empty).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests

from testing.records import Board, hb_message, rec_message
from testing.webconfig import make_config
from wanwitness import store as s
from wanwitness.collector.agents import add_agent
from wanwitness.collector.ingest import Ingestor
from wanwitness.web.app import WebSettings, create_app
from wanwitness.web.server import WebServer, bind

DAY = 86_400_000
HOUR = 3_600_000
START = 1767222000000  # 2026-01-01T00:00:00+01:00 (Europe/Berlin)
CLASSES = (("isp_down", 0.5), ("dns_down", 0.2), ("local_down", 0.15), ("degraded", 0.15))
def build(store: s.Store, agents: int, days: int, per_day: float, seed: int) -> dict[str, int]:
    rng = random.Random(seed)
    ing = Ingestor(store)
    counts = {"records": 0, "heartbeats": 0, "outages": 0, "tickets": 0}
    longest: dict[str, tuple[int, int]] = {}  # month -> agent1's longest isp_down (length, start)
    for i in range(agents):
        name = f"agent{i + 1}"
        add_agent(store, name, hb_s=3600)
        b = Board(ing, name)
        for day in range(days):
            d0 = START + day * DAY
            if day % 7 == 0:
                b.boot, b.boot_utc = day // 7 + 1, d0
                b.rec("boot", d0, deliver=False, reset="PWRON_RESET", fw="0.1.0", safe=False, hb_s=3600)
            # Outages at random times this day, none overlapping the next.
            starts = sorted(rng.uniform(0, DAY - 3 * HOUR) for _ in range(_poisson(rng, per_day)))
            last_end = d0
            for off in starts:
                at = int(d0 + off)
                if at <= last_end + 60_000:
                    continue
                cls = rng.choices([c for c, _ in CLASSES], [w for _, w in CLASSES])[0]
                length = int(min(2 * HOUR, rng.lognormvariate(6.0, 1.6) * 1000))
                b.state(cls, at, bound=at - 2000, ev={"by": "probe"}, deliver=False)
                month = time.strftime("%Y-%m", time.gmtime(at / 1000))
                if i == 0 and cls == "isp_down" and length > longest.get(month, (0, 0))[0]:
                    longest[month] = (length, at)
                b.state("up", at + length, deliver=False)
                last_end = at + length
                counts["outages"] += 1
            msgs = ([rec_message(name, b.boot, b.outbox, d0 + DAY - 1000, sent_t=b.t(d0 + DAY - 1000))]
                    if b.outbox else [])
            counts["records"] += len(b.outbox)
            b.outbox = []
            msgs += [hb_message(name, b.boot, b.t(d0 + h * HOUR), d0 + h * HOUR) for h in range(24)]
            counts["heartbeats"] += 24
            result = ing.ingest(msgs)
            if result.quarantined:
                raise SystemExit(f"web_load: the generated data was refused: {result.reasons}")
    counts["latency_rows"] = latency_rows(store, agents, days, rng)
    # The user reported agent1's longest ISP outage of each month 10 minutes in.
    from datetime import UTC, datetime

    from wanwitness.claims import tickets as tk
    tz = ZoneInfo("Europe/Berlin")
    for n, (_month, (_length, at)) in enumerate(sorted(longest.items()), start=1):
        opened = datetime.fromtimestamp((at + 600_000) / 1000, UTC)
        tk.add(store, tk.new_ticket(f"T{n:03d}", opened, tz=tz, channel="phone",
                                    operator="support"))
        counts["tickets"] += 1
    return counts


TARGETS = ("gw:192.0.2.1", "198.51.100.7", "198.51.100.8", "203.0.113.9", "dns:198.51.100.53")


def latency_rows(store: s.Store, agents: int, days: int, rng: random.Random) -> int:
    """The latency table as 30-second heartbeats fill it: every 5-minute bucket of the
    range for a gateway, three anchors and a resolver (written directly: the hourly
    heartbeats above carry no summaries, and a year of 30 s heartbeats through ingest
    would take hours to build). Returns the rows written."""
    n = 0
    step, hour = s.LATENCY_SPANS_MS
    with store.engine.begin() as conn:
        for i in range(agents):
            rows: list[dict[str, Any]] = []
            for k, target in enumerate(TARGETS):
                base = 2 if k == 0 else 8 + 6 * k
                hourly: dict[int, dict[str, Any]] = {}
                for b in range(days * DAY // step):
                    lost = rng.choices((0, 1, 2, 10), (90, 6, 3, 1))[0]
                    typ = base + rng.randint(0, base)
                    timed = lost < 10
                    at = START + b * step
                    row = {"agent": f"agent{i + 1}", "span_ms": step, "bucket_ms": at,
                           "target": target, "sent": 10, "lost": lost,
                           "rtt_min": base if timed else None, "rtt_max": typ * 3 if timed else None,
                           "med_w": typ * (10 - lost) if timed else 0,
                           "med_n": 10 - lost if timed else 0}
                    rows.append(row)
                    h = hourly.setdefault(at // hour * hour, dict(row, span_ms=hour,
                                                                  bucket_ms=at // hour * hour,
                                                                  sent=0, lost=0, med_w=0, med_n=0))
                    for key in ("sent", "lost", "med_w", "med_n"):
                        h[key] += row[key]
                    if timed:
                        h["rtt_min"] = base
                        h["rtt_max"] = max(h["rtt_max"] or 0, typ * 3)
                rows.extend(hourly.values())
                if len(rows) >= 20_000:
                    conn.execute(s.latency.insert(), rows)
                    n += len(rows)
                    rows = []
            if rows:
                conn.execute(s.latency.insert(), rows)
                n += len(rows)
    return n


def _poisson(rng: random.Random, lam: float) -> int:
    n, p, limit = 0, 1.0, pow(2.718281828459045, -lam)
    while True:
        p *= rng.random()
        if p < limit:
            return n
        n += 1


def shots(base: str, period: str, out: Path) -> None:
    """The calendar, the Now page, the latency charts and the call sheet in Debian's
    Chromium (Playwright)."""
    import shutil

    from playwright.sync_api import sync_playwright
    out.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium",
                                    args=["--no-sandbox"])
        for name, path, size in (
                ("calendar", f"/calendar?period={period}&agent=agent1", {"width": 1100, "height": 800}),
                ("now", "/", {"width": 1100, "height": 500}),
                ("latency", "/latency?agent=agent1&range=week", {"width": 1100, "height": 800}),
                ("callsheet-phone", "/callsheet?agent=agent1", {"width": 390, "height": 844})):
            page = browser.new_context(viewport=size, locale="en-GB",
                                       timezone_id="Europe/Berlin").new_page()
            r = page.goto(base + path)
            if r is not None and r.ok:
                page.screenshot(path=str(out / f"{name}.png"), full_page=True)
                print(f"web_load: screenshot {out / name}.png", file=sys.stderr)
            page.context.close()
        browser.close()


def timed(http: requests.Session, url: str, repeat: int) -> dict[str, Any]:
    times, size, status = [], 0, 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        r = http.get(url, timeout=600)
        times.append(time.perf_counter() - t0)
        size, status = len(r.content), r.status_code
    warm = times[1:] or times
    return {"status": status, "bytes": size, "cold_s": times[0],
            "median_s": statistics.median(warm), "max_s": max(warm)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--agents", type=int, default=3)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--outages-per-day", type=float, default=3.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--db", help="an empty store's URL (default: a temporary SQLite file)")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--screenshots", type=Path, metavar="DIR",
                    help="also save Chromium screenshots of the pages here (README's images)")
    args = ap.parse_args(argv)
    if not 1 <= args.agents <= 100 or not 1 <= args.days <= 3660 or args.repeat < 1:
        ap.error("--agents 1..100, --days 1..3660, --repeat >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        url = args.db or f"sqlite:///{tmp}/w.db"
        store = s.open_store(url)
        with store.engine.connect() as conn:
            used = conn.execute(s.agents.select().limit(1)).first() is not None
        if used:
            print(f"web_load: {url} is not empty", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        counts = build(store, args.agents, args.days, args.outages_per_day, args.seed)
        built_s = time.perf_counter() - t0
        print(f"web_load: {args.agents} agents x {args.days} days: {counts['records']} records, "
              f"{counts['heartbeats']} heartbeats, {counts['outages']} outages, "
              f"{counts['tickets']} tickets, {counts['latency_rows']} latency rows, built in "
              f"{built_s:.1f} s", file=sys.stderr)
        conf = make_config(Path(tmp))
        now = START + args.days * DAY
        app = create_app(store, WebSettings(tz=ZoneInfo("Europe/Berlin"), loopback_only=True,
                                            config=conf, now_ms=lambda: now))
        server = WebServer(app, bind("127.0.0.1", 0))
        server.start()
        base = f"http://127.0.0.1:{server.port}"
        last = time.strftime("%Y-%m", time.gmtime((now - DAY) / 1000))
        month_from = time.strftime("%Y-%m-01", time.gmtime((now - DAY) / 1000))
        pages = [
            ("Now", "/"),
            ("Calendar (a month, one agent)", f"/calendar?period={last}&agent=agent1"),
            ("Outages, one agent, one month", f"/outages?agent=agent1&since={month_from}"),
            ("Outages, all, the year", "/outages"),
            ("Claim preview (a month)", f"/claim?period={last}"),
            ("Latency, one agent, a day", "/latency?agent=agent1&range=day"),
            ("Latency, one agent, the year", "/latency?agent=agent1&range=year"),
            ("API latency, one agent, a month", "/api/v1/latency?agent=agent1&range=month"),
            ("API agents", "/api/v1/agents"),
            ("API outages, one agent, one month",
             f"/api/v1/outages?agent=agent1&since={month_from}"),
            ("API outages, all, the year", "/api/v1/outages"),
        ]
        rows = []
        try:
            http = requests.Session()
            for label, path in pages:
                r = timed(http, base + path, args.repeat)
                r.update(page=label, path=path)
                rows.append(r)
                if r["status"] != 200:
                    print(f"web_load: {path} answered {r['status']}", file=sys.stderr)
            if args.screenshots:
                shots(base, last, args.screenshots)
        finally:
            server.stop()
            store.dispose()
    print("| page | cold (s) | median (s) | max (s) | bytes |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['page']} | {r['cold_s']:.2f} | {r['median_s']:.2f} | {r['max_s']:.2f} | "
              f"{r['bytes']:,} |")
    if args.json:
        args.json.write_text(json.dumps({"agents": args.agents, "days": args.days,
                                         "counts": counts, "built_s": built_s, "pages": rows},
                                        indent=2))
    return 0 if all(r["status"] == 200 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
