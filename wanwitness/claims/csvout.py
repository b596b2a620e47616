"""`wanwitness claim --format csv`: one row per item of the claim, for a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

HEADER = ("period", "rules", "kind", "description", "amount", "currency", "outages", "tickets",
          "basis")


def to_csv(claim: dict[str, Any]) -> str:
    """Header line, then one line per item; ids joined with ';', basis as compact JSON.
    The amounts add up to the claim's total (each is already rounded to cents)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for item in claim["items"]:
        w.writerow([claim["period"]["label"], claim["rules"]["name"], item["kind"],
                    item["description"], item["amount"], claim["currency"],
                    ";".join(item["outages"]), ";".join(item["tickets"]),
                    json.dumps(item["basis"], sort_keys=True, separators=(",", ":"),
                               ensure_ascii=False)])
    return buf.getvalue()
