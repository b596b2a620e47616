"""Round trips and loss over time: the heartbeats' `lat` summaries (schema.latency,
5-minute buckets) re-bucketed for a range, and drawn as server-rendered SVG (no
JavaScript, no chart library: a band from the fastest to the slowest answer, a line
for the typical one, and the loss as bars under it). A bucket with no heartbeat is a
gap, never drawn across (a line joined over an outage hides it)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from markupsafe import Markup, escape

from wanwitness import store as s
from wanwitness.errors import UserError

# range -> (its length, the step it is drawn in): about 300 points each
RANGES: dict[str, tuple[int, int]] = {
    "day": (86_400_000, 300_000),
    "week": (7 * 86_400_000, 1_800_000),
    "month": (31 * 86_400_000, 7_200_000),
    "year": (366 * 86_400_000, 86_400_000),
}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def role(target: str) -> str:
    return "gateway" if target.startswith("gw:") else "dns" if target.startswith("dns:") else "anchor"


def series(store: s.Store, *, agent: str, range_: str, now_ms: int) -> dict[str, Any]:
    """One agent's round trips and loss per target over the `range_` up to now, in the
    range's step: per bucket probes sent and lost, loss %, the fastest, typical (the
    heartbeats' medians weighted by their answers) and slowest answer in ms."""
    # (the caller checked the agent: web.data.pick_agent)
    if range_ not in RANGES:
        raise UserError(f"range: {range_!r} is not one of {', '.join(RANGES)}")
    span, step = RANGES[range_]
    until = (now_ms // step + 1) * step   # the bucket now is in, whole
    since = until - span
    L = s.latency
    span = max(x for x in s.LATENCY_SPANS_MS if step % x == 0)   # the coarsest that fits
    b = (L.c.bucket_ms // step).label("b")
    q = (sa.select(L.c.target, b, sa.func.sum(L.c.sent), sa.func.sum(L.c.lost),
                   sa.func.min(L.c.rtt_min), sa.func.max(L.c.rtt_max),
                   sa.func.sum(L.c.med_w), sa.func.sum(L.c.med_n))
         .where(L.c.agent == agent, L.c.span_ms == span, L.c.bucket_ms >= since,
                L.c.bucket_ms < until)
         .group_by(L.c.target, b).order_by(L.c.target, b))
    targets: dict[str, list[dict[str, Any]]] = {}
    with store.engine.connect() as conn:
        for target, bucket, sent, lost, lo, hi, med_w, med_n in conn.execute(q):
            sent, lost, med_w, med_n = int(sent), int(lost), int(med_w), int(med_n)
            targets.setdefault(target, []).append({
                "t": iso(int(bucket) * step), "ms": int(bucket) * step, "sent": sent, "lost": lost,
                "loss_pct": round(100 * lost / sent, 1) if sent else None,
                "min": None if lo is None else int(lo),
                "typical": round(med_w / med_n) if med_n else None,
                "max": None if hi is None else int(hi)})
    order = {"gateway": 0, "anchor": 1, "dns": 2}
    return {
        "agent": agent, "range": range_, "step_s": step // 1000, "since": iso(since),
        "until": iso(until),
        "targets": [{"target": tg, "role": role(tg), "points": pts}
                    for tg, pts in sorted(targets.items(), key=lambda kv: (order[role(kv[0])], kv[0]))],
    }


# --- drawing ------------------------------------------------------------------------

W, H_RTT, H_LOSS, PAD_L, PAD_B = 800, 140, 36, 48, 18
H = H_RTT + H_LOSS + PAD_B + 8


def _nice(v: float) -> int:
    """The smallest of 1, 2, 5 x 10^n at or above v (at least 10 ms)."""
    n = 10
    while True:
        for m in (1, 2, 5):
            if n * m >= v:
                return n * m
        n *= 10


def _runs(points: list[dict[str, Any]], step: int) -> list[list[dict[str, Any]]]:
    """Consecutive buckets with answer times together: a missing bucket (no heartbeat)
    or one where nothing answered (everything lost) ends a run."""
    runs: list[list[dict[str, Any]]] = []
    last = None
    for p in points:
        if p["min"] is None:
            last = None
            continue
        if runs and last is not None and p["ms"] - last == step:
            runs[-1].append(p)
        else:
            runs.append([p])
        last = p["ms"]
    return runs


def _tick_label(ms: int, range_: str, tz: ZoneInfo) -> str:
    d = datetime.fromtimestamp(ms / 1000, tz)
    if range_ == "day":
        return d.strftime("%H:%M")
    if range_ == "week":
        return d.strftime("%a %d.%m.")
    return d.strftime("%d.%m.%y") if range_ == "year" else d.strftime("%d.%m.")


def svg(data: dict[str, Any], target: dict[str, Any], tz: ZoneInfo) -> Markup:
    """One target's chart: round trips (band fastest..slowest, line typical) above,
    loss below, gaps left empty; every bucket has a tooltip with its figures."""
    since = int(datetime.fromisoformat(data["since"].replace("Z", "+00:00")).timestamp() * 1000)
    until = int(datetime.fromisoformat(data["until"].replace("Z", "+00:00")).timestamp() * 1000)
    step = data["step_s"] * 1000
    pts = target["points"]
    highs = sorted(p["max"] for p in pts if p["max"] is not None)
    # The scale: the 95th percentile of the slowest answers, so one spike does not
    # flatten the rest (answers above it are drawn to the top and say so).
    top = _nice(highs[int(0.95 * (len(highs) - 1))] * 1.1) if highs else 100
    pw = W - PAD_L - 4

    def x(ms: int) -> float:
        return PAD_L + pw * (ms - since) / (until - since)

    def y(v: float) -> float:
        return 4 + H_RTT * (1 - min(v, top) / top)

    bw = max(pw * step / (until - since), 1.0)
    out = [f'<svg class="lat-chart" viewBox="0 0 {W} {H}" role="img" '
           f'aria-label="{escape(target["target"])}: round trip and loss" '
           f'preserveAspectRatio="none" xmlns="http://www.w3.org/2000/svg">']
    for frac in (0, 0.5, 1):   # the round-trip axis
        yy = 4 + H_RTT * (1 - frac)
        out.append(f'<line class="grid" x1="{PAD_L}" x2="{W - 4}" y1="{yy:.1f}" y2="{yy:.1f}"/>')
        out.append(f'<text class="axis" x="{PAD_L - 4}" y="{yy + 4:.1f}" text-anchor="end">'
                   f'{round(top * frac)} ms</text>')
    ly = 8 + H_RTT
    out.append(f'<rect class="loss-bg" x="{PAD_L}" y="{ly}" width="{pw}" height="{H_LOSS}"/>')
    out.append(f'<text class="axis" x="{PAD_L - 4}" y="{ly + 12}" text-anchor="end">loss</text>')
    for run in _runs(pts, step):
        upper = " ".join(f"{x(p['ms'] + step // 2):.1f},{y(p['max']):.1f}" for p in run)
        lower = " ".join(f"{x(p['ms'] + step // 2):.1f},{y(p['min']):.1f}" for p in reversed(run))
        out.append(f'<polygon class="band" points="{upper} {lower}"/>')
        typ = [p for p in run if p["typical"] is not None]
        if typ:
            line = " ".join(f"{x(p['ms'] + step // 2):.1f},{y(p['typical']):.1f}" for p in typ)
            out.append(f'<polyline class="typical" points="{line}"/>')
    for p in pts:   # loss bars, and every bucket's figures as a tooltip
        title = escape(f"{datetime.fromtimestamp(p['ms'] / 1000, tz):%d.%m.%Y %H:%M}: "
                       f"{p['sent']} probes, {p['lost']} lost ({p['loss_pct']} %)"
                       + (f"; {p['min']} / {p['typical']} / {p['max']} ms" if p["min"] is not None else ""))
        if p["lost"]:
            h = H_LOSS * p["lost"] / p["sent"]
            cls = "loss all" if p["lost"] == p["sent"] else "loss"
            out.append(f'<rect class="{cls}" x="{x(p["ms"]):.1f}" y="{ly + H_LOSS - h:.1f}" '
                       f'width="{bw:.1f}" height="{h:.1f}"><title>{title}</title></rect>')
        else:
            out.append(f'<rect class="hit" x="{x(p["ms"]):.1f}" y="4" width="{bw:.1f}" '
                       f'height="{H_RTT + H_LOSS + 4}"><title>{title}</title></rect>')
        if p["max"] is not None and p["max"] > top:
            out.append(f'<path class="clipped" d="M{x(p["ms"] + step // 2) - 3:.1f},4 h6 l-3,5 z"/>')
    for i in range(5):   # the time axis
        ms = since + (until - since) * i // 4
        anchor = "start" if i == 0 else "end" if i == 4 else "middle"
        out.append(f'<text class="axis" x="{x(ms):.1f}" y="{H - 4}" text-anchor="{anchor}">'
                   f'{escape(_tick_label(ms, data["range"], tz))}</text>')
    out.append("</svg>")
    return Markup("".join(out))


def summary(target: dict[str, Any]) -> dict[str, Any]:
    """The range in one line: probes, loss %, the typical and the slowest answer."""
    pts = target["points"]
    sent = sum(p["sent"] for p in pts)
    lost = sum(p["lost"] for p in pts)
    typ = sorted(p["typical"] for p in pts if p["typical"] is not None)
    highs = [p["max"] for p in pts if p["max"] is not None]
    return {"sent": sent, "lost": lost, "loss_pct": round(100 * lost / sent, 2) if sent else None,
            "typical": typ[len(typ) // 2] if typ else None, "max": max(highs) if highs else None,
            "buckets": len(pts)}
