"""`wanwitness claim --format csv`: one row per item of the claim, for a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from wanwitness.csvsafe import text

HEADER = ("period", "rules", "kind", "description", "amount", "currency", "outages", "tickets",
          "basis")


def to_csv(claim: dict[str, Any]) -> str:
    """Header line, then one line per item; ids joined with ';', basis as compact JSON.
    The amounts add up to the claim's total (each is already rounded to cents). Text
    cells, and each id of a list (a ';' locale splits them), are neutralised
    (csvsafe); the amount is a number and stays one."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HEADER)
    for item in claim["items"]:
        w.writerow([text(claim["period"]["label"]), text(claim["rules"]["name"]),
                    text(item["kind"]), text(item["description"]), item["amount"],
                    text(claim["currency"]), ";".join(text(i) for i in item["outages"]),
                    ";".join(text(t) for t in item["tickets"]),
                    text(json.dumps(item["basis"], sort_keys=True, separators=(",", ":"),
                                    ensure_ascii=False))])
    return buf.getvalue()
