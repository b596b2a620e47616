"""Scoring the outage lab: what the collector found (and what the peers said) against the truth.

Pure functions on plain data; times are wall-clock ms.

Our agent (`score_found`):
- A found outage *matches* a true one when both have the same class and their spans
  overlap. Each found outage goes to the true outage of its class it overlaps most.
  Several found outages may match one true outage (an agent power cut in the middle
  ends the old boot's outage, the new boot opens another): then the match runs from
  the earliest start to the latest end of its pieces.
- start_err_s = found start - true start, end_err_s = found end - true end (signed,
  seconds; None while the found outage is still open). detect_latency_s = when the
  collector received the `state` record that opened it (records.recv_ms of the
  first piece's open_seq) - true start.
- missed: true outages nothing matched. false: found outages (class `unknown` is not
  an outage) that overlap no true outage of any class. A found outage that overlaps
  a true outage of another class only is neither matched nor false: its `verdict` in
  `found` says "misclassified".
- records_lost: seqs 1..max stored seq of the agent that are neither stored nor inside
  a range the agent declared dropped (`gap` records). records_duplicated: records the
  collector quarantined as "conflicting record" (a seq stored twice with different
  content; the primary key makes a plain duplicate impossible).

Peers (`score_peer`): a peer only sees "down", so its outages are scored against the
true isp_down and local_down outages, consecutive ones merged. missed / false as
above; the medians are over the absolute start and end errors of the matches.

Aggregates (`summarize`) use absolute errors: median and 95th percentile (nearest
rank).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

DOWN_CLASSES = ("isp_down", "local_down")
NOT_OUTAGES = ("unknown",)


def parse_iso(text: str) -> int:
    """'2026-11-03T09:12:00.123Z' -> UTC ms."""
    dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return round(dt.timestamp() * 1000)


def _sec(ms: int | None) -> float | None:
    return None if ms is None else round(ms / 1000, 3)


def overlap_ms(a0: int, a1: int | None, b0: int, b1: int | None) -> int:
    """Length of [a0, a1) ∩ [b0, b1) in ms, -1 if they do not meet; None ends are open.

    A zero-length span meets the other when it lies inside it (or at its start).
    """
    ha = math.inf if a1 is None else max(a1, a0)
    hb = math.inf if b1 is None else max(b1, b0)
    lo, hi = max(a0, b0), min(ha, hb)
    if hi > lo:
        return int(min(hi, 1 << 62) - lo)
    if (a0 == ha and b0 <= a0 < hb) or (b0 == hb and a0 <= b0 < ha):
        return 0
    return -1


def overlaps(a0: int, a1: int | None, b0: int, b1: int | None) -> bool:
    return overlap_ms(a0, a1, b0, b1) >= 0


def found_from_outages(rows: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """`wanwitness outages --json` rows -> found outages with ms (unknown spans dropped)."""
    out = []
    for r in rows:
        if r["class"] in NOT_OUTAGES:
            continue
        ev = r.get("evidence") or {}
        out.append({"class": r["class"], "start_ms": parse_iso(r["start"]),
                    "end_ms": None if r["end"] is None else parse_iso(r["end"]),
                    "open_seq": ev.get("open_seq"), "boot": ev.get("boot"),
                    "end_reason": ev.get("end")})
    return sorted(out, key=lambda f: f["start_ms"])


def score_found(truth: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]],
                recv_ms: dict[int, int]) -> dict[str, Any]:
    """Match found outages to true ones.

    truth: [{"class", "start_ms", "end_ms"}]; found: [{"class", "start_ms", "end_ms"
    (None: open), "open_seq"}]; recv_ms: seq -> when the collector received it.
    Returns {"matched": [...], "missed": n, "false": n, "misclassified": n,
    "found": [found + verdict]}.
    """
    owner: list[int | None] = []
    for f in found:
        best, best_ov = None, -1
        for i, t in enumerate(truth):
            if t["class"] != f["class"]:
                continue
            ov = overlap_ms(f["start_ms"], f["end_ms"], t["start_ms"], t["end_ms"])
            if ov > best_ov:
                best, best_ov = i, ov
        owner.append(best)
    matched = []
    missed = 0
    for i, t in enumerate(truth):
        pieces = [f for f, o in zip(found, owner) if o == i]
        if not pieces:
            missed += 1
            continue
        first = min(pieces, key=lambda f: f["start_ms"])
        ends = [f["end_ms"] for f in pieces]
        end = None if any(e is None for e in ends) else max(ends)  # type: ignore[type-var]
        seq = first.get("open_seq")
        recv = recv_ms.get(seq) if seq is not None else None
        matched.append({
            "class": t["class"],
            "start_err_s": _sec(first["start_ms"] - t["start_ms"]),
            "end_err_s": None if end is None else _sec(end - t["end_ms"]),
            "detect_latency_s": None if recv is None else _sec(recv - t["start_ms"]),
            "pieces": len(pieces),
        })
    false = misclassified = 0
    verdicts = []
    for f, o in zip(found, owner):
        if o is not None:
            verdict = "matched"
        elif any(overlaps(f["start_ms"], f["end_ms"], t["start_ms"], t["end_ms"])
                 for t in truth):
            verdict = "misclassified"
            misclassified += 1
        else:
            verdict = "false"
            false += 1
        verdicts.append(dict(f, verdict=verdict))
    return {"matched": matched, "missed": missed, "false": false,
            "misclassified": misclassified, "found": verdicts}


def records_lost(seqs: Iterable[int], gaps: Iterable[tuple[int, int]]) -> int:
    """Seqs 1..max(seqs) neither stored nor declared dropped by a gap [first, last]."""
    have = set(seqs)
    if not have:
        return 0
    top = max(have)
    declared: set[int] = set()
    for first, last in gaps:
        declared.update(range(max(first, 1), min(last, top) + 1))
    return sum(1 for s in range(1, top + 1) if s not in have and s not in declared)


def down_spans(truth: Sequence[dict[str, Any]]) -> list[tuple[int, int]]:
    """The true isp_down / local_down outages, consecutive or overlapping ones merged."""
    spans = sorted((t["start_ms"], t["end_ms"]) for t in truth if t["class"] in DOWN_CLASSES)
    merged: list[list[int]] = []
    for s, e in spans:
        if merged and s <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], e)
        else:
            merged.append([s, e])
    return [(s, e) for s, e in merged]


def median(values: Sequence[float]) -> float | None:
    v = sorted(values)
    if not v:
        return None
    n = len(v)
    mid = n // 2
    return round(v[mid] if n % 2 else (v[mid - 1] + v[mid]) / 2, 3)


def p95(values: Sequence[float]) -> float | None:
    v = sorted(values)
    if not v:
        return None
    return round(v[max(0, math.ceil(0.95 * len(v)) - 1)], 3)


def score_peer(outages: Sequence[tuple[int, int | None]],
               truth: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One peer's outages [(start_ms, end_ms | None)] against the true down spans."""
    downs = down_spans(truth)
    owner: list[int | None] = []
    for s, e in outages:
        best, best_ov = None, -1
        for i, (ts, te) in enumerate(downs):
            ov = overlap_ms(s, e, ts, te)
            if ov > best_ov:
                best, best_ov = i, ov
        owner.append(best)
    start_errs: list[float] = []
    end_errs: list[float] = []
    missed = 0
    for i, (ts, te) in enumerate(downs):
        pieces = [o for o, w in zip(outages, owner) if w == i]
        if not pieces:
            missed += 1
            continue
        start_errs.append(abs(min(p[0] for p in pieces) - ts) / 1000)
        ends = [p[1] for p in pieces if p[1] is not None]
        if len(ends) == len(pieces):
            end_errs.append(abs(max(ends) - te) / 1000)
    return {"missed": missed, "false": sum(1 for w in owner if w is None),
            "start_err_s_median": median(start_errs), "end_err_s_median": median(end_errs),
            "matched": len(downs) - missed,
            "start_errs_s": [round(x, 3) for x in start_errs],
            "end_errs_s": [round(x, 3) for x in end_errs]}


def peer_outages(report: dict[str, Any]) -> dict[str, list[tuple[int, int | None]]]:
    """bench.lab.peers' JSON report -> {peer: [(start_ms, end_ms | None)]}."""
    return {name: [(o["start_ms"], o["end_ms"]) for o in entry.get("outages", [])]
            for name, entry in report.get("peers", {}).items()}


def result(scenario: str, truth: Sequence[dict[str, Any]], found: Sequence[dict[str, Any]],
           recv_ms: dict[int, int], seqs: Iterable[int], gaps: Iterable[tuple[int, int]],
           conflicts: int, peers: dict[str, list[tuple[int, int | None]]]) -> dict[str, Any]:
    """The run's JSON (the shape the issue gives), from everything the lab collected."""
    ours = score_found(truth, found, recv_ms)
    peer_scores = {}
    for name, outs in peers.items():
        sp = score_peer(outs, truth)
        peer_scores[name] = {k: sp[k] for k in ("missed", "false", "start_err_s_median",
                                                "end_err_s_median")}
    from wanwitness.collector.timeline import iso

    def fmt(f: dict[str, Any]) -> dict[str, Any]:
        return {"class": f["class"], "start": iso(f["start_ms"]),
                "end": None if f["end_ms"] is None else iso(f["end_ms"]),
                "start_ms": f["start_ms"], "end_ms": f["end_ms"],
                **{k: f[k] for k in ("open_seq", "boot", "end_reason", "verdict") if k in f}}

    return {
        "scenario": scenario,
        "truth": [fmt(t) for t in truth],
        "found": [fmt(f) for f in ours["found"]],
        "matched": [{k: m[k] for k in ("class", "start_err_s", "end_err_s", "detect_latency_s")}
                    for m in ours["matched"]],
        "missed": ours["missed"],
        "false": ours["false"],
        "misclassified": ours["misclassified"],
        "records_lost": records_lost(seqs, gaps),
        "records_duplicated": conflicts,
        "peers": peer_scores,
    }


# --- the suite ----------------------------------------------------------------------

def _abs(values: Iterable[float | None]) -> list[float]:
    return [abs(v) for v in values if v is not None]


def summarize(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per scenario and overall figures for the suite table."""
    def figures(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
        matched = [m for r in rs for m in r["matched"]]
        n_truth = len(matched) + sum(r["missed"] for r in rs)
        start = _abs(m["start_err_s"] for m in matched)
        end = _abs(m["end_err_s"] for m in matched)
        lat = [m["detect_latency_s"] for m in matched if m["detect_latency_s"] is not None]
        peers: dict[str, dict[str, Any]] = {}
        for r in rs:
            for name, p in r.get("peers", {}).items():
                agg = peers.setdefault(name, {"missed": 0, "false": 0, "start": [], "end": []})
                agg["missed"] += p["missed"]
                agg["false"] += p["false"]
                if p["start_err_s_median"] is not None:
                    agg["start"].append(p["start_err_s_median"])
                if p["end_err_s_median"] is not None:
                    agg["end"].append(p["end_err_s_median"])
        return {
            "truth": n_truth, "found": sum(len(r["found"]) for r in rs),
            "recall": None if not n_truth else round(len(matched) / n_truth, 3),
            "missed": sum(r["missed"] for r in rs), "false": sum(r["false"] for r in rs),
            "misclassified": sum(r.get("misclassified", 0) for r in rs),
            "start_median": median(start), "start_p95": p95(start),
            "end_median": median(end), "end_p95": p95(end),
            "latency_median": median(lat), "latency_p95": p95(lat),
            "records_lost": sum(r["records_lost"] for r in rs),
            "records_duplicated": sum(r["records_duplicated"] for r in rs),
            # the agent's longest gap between two LED sample turns (its console's gap=)
            "sample_gap_max_ms": max((r["sample_gap_max_ms"] for r in rs
                                      if r.get("sample_gap_max_ms") is not None), default=None),
            "peers": {name: {"missed": a["missed"], "false": a["false"],
                             "start_median": median(a["start"]), "end_median": median(a["end"])}
                      for name, a in peers.items()},
        }

    return {"scenarios": {r["scenario"]: figures([r]) for r in results},
            "overall": figures(results)}


def _f(v: float | None, digits: int = 2) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def table(summary: dict[str, Any]) -> str:
    """Two Markdown tables: ours, then the peers', per scenario and overall."""
    rows = list(summary["scenarios"].items()) + [("**overall**", summary["overall"])]
    out = ["| scenario | truth | recall | false | misclassified | start err med / p95 (s) | "
           "end err med / p95 (s) | detection med / p95 (s) | lost | dup | LED gap (ms) |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, f in rows:
        recall = "-" if f["recall"] is None else f"{f['recall']:.0%}"
        out.append(f"| {name} | {f['truth']} | {recall} | {f['false']} | {f['misclassified']} | "
                   f"{_f(f['start_median'])} / {_f(f['start_p95'])} | "
                   f"{_f(f['end_median'])} / {_f(f['end_p95'])} | "
                   f"{_f(f['latency_median'])} / {_f(f['latency_p95'])} | "
                   f"{f['records_lost']} | {f['records_duplicated']} | "
                   f"{'-' if f.get('sample_gap_max_ms') is None else f['sample_gap_max_ms']} |")
    peer_names: list[str] = []
    for _, f in rows:
        for p in f["peers"]:
            if p not in peer_names:
                peer_names.append(p)
    if peer_names:
        out.append("")
        out.append("Peers, each cell: missed / false, median start / end error (s), scored "
                   "against the true isp_down + local_down outages (`ours`: all classes). "
                   "`-`: nothing matched, or every matched outage was still open when the "
                   "run ended.")
        out.append("")
        out.append("| scenario | ours | " + " | ".join(peer_names) + " |")
        out.append("|---|" + "---|" * (len(peer_names) + 1))
        for name, f in rows:
            ours = (f"{f['missed']} / {f['false']}, {_f(f['start_median'], 1)} / "
                    f"{_f(f['end_median'], 1)}")
            cells = []
            for p in peer_names:
                s = f["peers"].get(p)
                cells.append("-" if s is None else
                             f"{s['missed']} / {s['false']}, {_f(s['start_median'], 1)} / "
                             f"{_f(s['end_median'], 1)}")
            out.append(f"| {name} | {ours} | " + " | ".join(cells) + " |")
    return "\n".join(out)
