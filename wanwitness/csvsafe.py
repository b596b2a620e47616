"""CSV text cells that a spreadsheet will not run as formulas (CWE-1236).

Excel, LibreOffice and Google Sheets take a cell that starts with `=`, `+`, `-`, `@`, a
tab or a carriage return as a formula (HYPERLINK(), DDE). Our CSV files go to an ISP,
and ticket numbers, operators, notes and agent names come from people: `text()` gives
such a cell a leading `'`, which spreadsheets show as plain text (OWASP, "CSV
Injection"). Numbers we generate ("-5.00") do not pass through it and stay numbers.
`restore()` undoes it when we read our own files back; a cell that already began with
`'` before a trigger (or another `'`) gets one more, so the round trip is exact.
"""

from __future__ import annotations

TRIGGERS = frozenset("=+-@\t\r")


def _marked(cell: str) -> bool:
    return len(cell) > 1 and cell[0] == "'" and (cell[1] in TRIGGERS or cell[1] == "'")


def text(cell: str) -> str:
    """A text cell as written: neutralised when a spreadsheet would evaluate it."""
    if cell and (cell[0] in TRIGGERS or _marked(cell)):
        return "'" + cell
    return cell


def restore(cell: str) -> str:
    """A text cell as read back from a file `text()` wrote."""
    return cell[1:] if _marked(cell) else cell
