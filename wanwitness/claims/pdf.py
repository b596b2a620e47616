"""The claim letter as an A4 PDF (reportlab platypus), set in DejaVu Sans.

DejaVu Sans is embedded because the standard PDF fonts (Helvetica & co.) only cover
Latin-1: Hungarian ő/ű and Cyrillic would come out as empty boxes.
"""

from __future__ import annotations

import io
import re
from functools import partial
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from reportlab.lib import colors
from reportlab.lib.enums import TA_RIGHT
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.pdfbase import pdfmetrics
from reportlab.pdfbase.ttfonts import TTFont
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from ..errors import UserError
from .letter import Letter, Section
from .letter import Table as LetterTable

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONTS = {"DejaVuSans": "DejaVuSans.ttf", "DejaVuSans-Bold": "DejaVuSans-Bold.ttf"}
FONT_PACKAGE = "fonts-dejavu-core"
MARGIN = 20 * mm
GRID = colors.HexColor("#8a8a8a")
SHADE = colors.HexColor("#ececec")
KEEP_TABLE_ROWS = 8


def _register_fonts() -> None:
    registered = set(pdfmetrics.getRegisteredFontNames())
    for name, filename in FONTS.items():
        if name in registered:
            continue
        path = FONT_DIR / filename
        if not path.is_file():
            raise UserError(f"the PDF letter needs the font {path}: install the package "
                            f"{FONT_PACKAGE} (e.g. apt-get install {FONT_PACKAGE})")
        pdfmetrics.registerFont(TTFont(name, str(path)))
    pdfmetrics.registerFontFamily("DejaVuSans", normal="DejaVuSans", bold="DejaVuSans-Bold",
                                  italic="DejaVuSans", boldItalic="DejaVuSans-Bold")


def _styles() -> dict[str, ParagraphStyle]:
    body = ParagraphStyle("body", fontName="DejaVuSans", bulletFontName="DejaVuSans", fontSize=9.5,
                          leading=12.5, spaceAfter=4)
    bold = ParagraphStyle("bold", body, fontName="DejaVuSans-Bold")
    return {
        "body": body,
        "sender": ParagraphStyle("sender", body, fontSize=8.5, leading=11, alignment=TA_RIGHT),
        "recipient": ParagraphStyle("recipient", body, spaceBefore=3 * mm, spaceAfter=6 * mm),
        "date": ParagraphStyle("date", body, alignment=TA_RIGHT, spaceAfter=5 * mm),
        "subject": ParagraphStyle("subject", bold, fontSize=10.5, leading=13.5, spaceAfter=4 * mm),
        "heading": ParagraphStyle("heading", bold, fontSize=10, spaceBefore=2.5 * mm, spaceAfter=1.5 * mm),
        "bullet": ParagraphStyle("bullet", body, leftIndent=5 * mm, bulletIndent=1 * mm, spaceAfter=1.5),
        "cell": ParagraphStyle("cell", body, fontSize=8, leading=10, spaceAfter=0),
        "cell_head": ParagraphStyle("cell_head", bold, fontSize=8, leading=10, spaceAfter=0),
    }


def _text(s: str) -> str:
    """Plain text -> reportlab's paragraph markup (which is XML: escape it)."""
    return escape(s).replace("\n", "<br/>")


def _lines(lines: list[str], style: ParagraphStyle) -> Paragraph:
    return Paragraph("<br/>".join(escape(ln) for ln in lines), style)


_BREAKS = re.compile(r"[ \t\n]+")


def _column_widths(t: LetterTable, width: float, st: dict[str, ParagraphStyle]) -> list[float]:
    """Like a browser's automatic table layout: every column at least as wide as its
    longest word (so a ticket number or a heading is never split), the rest of the width
    shared in proportion to how much more each column would need to fit on one line."""
    pad = 6 + 1   # left + right padding, and a point for rounding
    rows = [(t.header, st["cell_head"])] + [(r, st["cell"]) for r in t.rows]
    if t.footer:
        rows.append((t.footer, st["cell_head"]))
    n = len(t.header)
    least, most = [0.0] * n, [0.0] * n
    for cells, style in rows:
        for i, text in enumerate(cells):
            def w(s: str) -> float:
                return float(pdfmetrics.stringWidth(s, style.fontName, style.fontSize)) + pad
            # Only ASCII spaces break a line (letter.py keeps dates whole with NBSP);
            # amounts never break.
            words = [text] if i in t.numeric else _BREAKS.split(text)
            least[i] = max([least[i]] + [w(word) for word in words])
            most[i] = max(most[i], least[i], w(text))
    if sum(most) <= width:
        return [m * width / sum(most) for m in most]
    if sum(least) >= width:
        return [m * width / sum(least) for m in least]
    slack = [m - s for m, s in zip(most, least)]
    spare = width - sum(least)
    return [s + spare * d / sum(slack) for s, d in zip(least, slack)]


def _table(t: LetterTable, width: float, st: dict[str, ParagraphStyle]) -> Table:
    def row(cells: list[str], style: ParagraphStyle) -> list[Paragraph]:
        return [Paragraph(_text(c), ParagraphStyle(f"{style.name}{i}", style, alignment=TA_RIGHT)
                          if i in t.numeric else style) for i, c in enumerate(cells)]

    data = [row(t.header, st["cell_head"])] + [row(r, st["cell"]) for r in t.rows]
    if t.footer:
        data.append(row(t.footer, st["cell_head"]))
    table = Table(data, colWidths=_column_widths(t, width, st), repeatRows=1)
    style = [
        ("FONTNAME", (0, 0), (-1, -1), "DejaVuSans"),   # the cells' default is Helvetica
        ("GRID", (0, 0), (-1, -1), 0.5, GRID),
        ("BACKGROUND", (0, 0), (-1, 0), SHADE),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ("LEFTPADDING", (0, 0), (-1, -1), 3),
        ("RIGHTPADDING", (0, 0), (-1, -1), 3),
    ]
    if t.footer:
        style.append(("BACKGROUND", (0, -1), (-1, -1), SHADE))
    table.setStyle(TableStyle(style))
    return table


def _section(s: Section, width: float, st: dict[str, ParagraphStyle]) -> list[Any]:
    head = [Paragraph(_text(s.heading), st["heading"])] if s.heading else []
    lead = head + [Paragraph(_text(p), st["body"]) for p in s.paragraphs]
    rest: list[Any] = [Paragraph(_text(b), st["bullet"], bulletText="•") for b in s.bullets]
    if s.table is not None:
        table = [_table(s.table, width, st), Spacer(1, 2 * mm)]
        # A heading and its introduction stay with a short table (a long one may split).
        if len(s.table.rows) <= KEEP_TABLE_ROWS:
            lead += table
        else:
            rest += table
    if s.after and (s.bullets or s.table is not None):
        rest.append(Spacer(1, 1.5 * mm))
    rest += [Paragraph(_text(p), st["body"]) for p in s.after]
    # A heading is never left alone at the foot of a page.
    if not lead:
        return rest
    if len(lead) == len(head) and rest:
        lead, rest = lead + rest[:1], rest[1:]
    return [KeepTogether(lead), *rest]


class _PagedCanvas(Canvas):
    """Writes "Page n of N" on every page: pages are held back until the count is known
    (this keeps each page's canvas state and replays it in save(); reportlab has no hook
    that knows the page count while a page is drawn)."""

    def __init__(self, *args: Any, page_label: str = "", **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._page_label = page_label
        self._held: list[dict[str, Any]] = []

    def showPage(self) -> None:
        self._held.append(dict(self.__dict__))
        self._startPage()

    def save(self) -> None:
        total = len(self._held)
        for state in self._held:
            self.__dict__.update(state)
            self.setFont("DejaVuSans", 8)
            self.setFillColor(colors.HexColor("#555555"))
            label = self._page_label % {"page": self._pageNumber, "pages": total}
            self.drawRightString(A4[0] - MARGIN - 6, 12 * mm, label)   # under the text (frame padding)
            super().showPage()
        super().save()


def letter_pdf(letter: Letter) -> bytes:
    _register_fonts()
    st = _styles()
    buf = io.BytesIO()
    doc = SimpleDocTemplate(buf, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN,
                            topMargin=MARGIN, bottomMargin=MARGIN, title=letter.subject,
                            author=letter.signer, subject=letter.title, creator="wanwitness",
                            invariant=1,
                            # else the canvas starts in Helvetica, which has no ő or Cyrillic
                            initialFontName="DejaVuSans", initialFontSize=9.5)
    width = doc.width - 12   # the frame pads 6 pt on each side
    story: list[Any] = [
        _lines(letter.sender, st["sender"]),
        _lines(letter.recipient, st["recipient"]),
        Paragraph(_text(letter.date_line), st["date"]),
        Paragraph(_text(letter.subject), st["subject"]),
        Paragraph(_text(letter.salutation), st["body"]),
    ]
    for section in letter.sections:
        story.extend(_section(section, width, st))
    closing = [Spacer(1, 4 * mm), Paragraph(_text(letter.closing), st["body"]), Spacer(1, 10 * mm),
               Paragraph("_" * 30, st["body"]), Paragraph(_text(letter.signer), st["body"])]
    if letter.attachments:
        closing.append(Spacer(1, 3 * mm))
        closing.extend(Paragraph(_text(a), st["body"]) for a in letter.attachments)
    story.append(KeepTogether(closing))
    doc.build(story, canvasmaker=partial(_PagedCanvas, page_label=letter.page_label))
    return buf.getvalue()
