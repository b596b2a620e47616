"""The claim letter: Markdown, HTML and PDF in five languages (wanwitness.claims.render)."""

from __future__ import annotations

import copy
import io
import json
import re
import shutil
from html.parser import HTMLParser

import pypdfium2
import pytest
from PIL import Image

from wanwitness.claims import catalogs, pdf, rules
from wanwitness.claims.letter import KNOWN_RULE_TEXTS
from wanwitness.claims.render import FORMATS, LANGUAGES, main, pdf_pages_png, render
from wanwitness.errors import UserError

HASH = "9f2c4e1b7a0d5c3e8f6a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f6a"
OUTAGE_1 = "home@2026-11-03T23:10:00.000Z"   # 00:10 on 4 November in Berlin
OUTAGE_2 = "home@2026-11-19T17:05:00.000Z"


def make_claim() -> dict:
    """A de-tkg58 claim for November 2026 in Berlin: an ISP outage from just after
    midnight on 4 Nov to 9 Nov (report at 00:31 on 4 Nov: days 3 and 4 are 7 and 8 Nov),
    a missed technician visit, and a short outage of the customer's own equipment."""
    return {
        "v": 1,
        "generated": "2026-12-01T10:00:00Z",
        "source": "store",
        "lang": "de",
        "rules": {"name": "de-tkg58", "title": "Germany, TKG 2021 §58(3)/(4)", "country": "DE",
                  "source": "Telekommunikationsgesetz (TKG) 2021 §58 Abs. 3 und 4",
                  "source_url": "https://www.gesetze-im-internet.de/tkg_2021/__58.html",
                  "clock_start": "ticket", "grace": "2 calendar days after receipt of the report",
                  "unit": "calendar_day", "options": {"partial_days": False}},
        "period": {"label": "2026-11", "start": "2026-11-01T00:00:00+01:00",
                   "end": "2026-12-01T00:00:00+01:00", "timezone": "Europe/Berlin"},
        "currency": "EUR",
        "monthly_fee": "59.99",
        "total": "24.00",
        "items": [
            {"kind": "day", "amount": "6.00",
             "basis": {"date": "2026-11-07", "day_number": 3, "rate": "max(EUR 5, 10 % of 59.99)"},
             "outages": [OUTAGE_1], "tickets": ["4711893"], "description": "day 3 of complete outage after the report"},
            {"kind": "day", "amount": "6.00",
             "basis": {"date": "2026-11-08", "day_number": 4, "rate": "max(EUR 5, 10 % of 59.99)"},
             "outages": [OUTAGE_1], "tickets": ["4711893"], "description": "day 4 of complete outage after the report"},
            {"kind": "appointment", "amount": "12.00",
             "basis": {"date": "2026-11-06", "ticket": "4711893", "rate": "max(EUR 10, 20 % of 59.99)"},
             "outages": [OUTAGE_1], "tickets": ["4711893"], "description": "missed technician appointment"},
        ],
        "outages": [
            {"id": OUTAGE_1, "agent": "home", "class": "isp_down",
             "start": "2026-11-03T23:10:00.000Z", "end": "2026-11-09T09:15:00.000Z",
             "duration_s": 468300.0, "counted_s": 172800.0, "claimed": True, "why_not": None,
             "evidence": {"boot": 3, "open_seq": 120, "close_seq": 301},
             "records": [{"seq": 120, "link": 5012, "hash": "ab12"},
                         {"seq": 301, "link": 5310, "hash": "cd34"}]},
            {"id": OUTAGE_2, "agent": "home", "class": "local_down",
             "start": "2026-11-19T17:05:00.000Z", "end": "2026-11-19T18:20:00.000Z",
             "duration_s": 4500.0, "counted_s": 0.0, "claimed": False,
             "why_not": "local_down: the customer's own equipment",
             "evidence": {"boot": 3, "open_seq": 900, "close_seq": 911},
             "records": [{"seq": 900, "link": 5377, "hash": "ef56"}]},
        ],
        "tickets": [
            {"number": "4711893", "opened": "2026-11-03T23:31:00Z", "closed": "2026-11-09T09:30:00Z",
             "channel": "phone", "operator": "17 / Maria Schulz", "promised": "2026-11-06T16:00:00Z",
             "appointments": [{"at": "2026-11-06T07:00:00Z", "missed": True}], "note": None,
             "outages": [OUTAGE_1]},
            {"number": "4712050", "opened": "2026-11-19T17:20:00Z", "closed": "2026-11-19T18:25:00Z",
             "channel": "email", "operator": "Jonas (Team 3)", "promised": None, "appointments": [],
             "note": "Router restarted on advice", "outages": [OUTAGE_2]},
        ],
        "notes": ["Partly restored days are not counted (option partial_days = false).",
                  "The outage on 19 Nov is the customer's own equipment and is not claimed."],
        "dates": {"file_by": "2027-05-31", "answer_due": "2026-12-31"},
        "customer": {"name": "Erika Mustermann", "address": "Hauptstr. 1\n10115 Berlin",
                     "customer_number": "K-123456", "contract": "V-987", "email": "erika@example.org",
                     "phone": ""},
        "isp": {"name": "Beispiel Telekom GmbH", "address": "Postfach 10 20 30\n53000 Bonn",
                "email": "billing@example.net"},
        "ledger": {"checkpoint": 54, "made": "2026-12-01T06:00:00Z", "root": HASH,
                   "heads": {"home": {"link": 5400, "hash": HASH}}},
    }


# What a reader of each language must find (whitespace normalised): the total, the
# outage starts in Berlin time, the spelled-out deadlines, the greeting, the rule's title.
EXPECTED = {
    "en": {"total": "€24.00", "starts": ["Nov 4, 2026, 00:10", "Nov 19, 2026, 18:05"],
           "end": "Nov 9, 2026, 10:15", "deadlines": ["December 31, 2026", "May 31, 2027"],
           "greeting": "Dear Sir or Madam,", "page": "Page {i} of {n}",
           "rule": "Germany, TKG 2021 §58(3)/(4)"},
    "de": {"total": "24,00 €", "starts": ["4. Nov. 2026, 00:10", "19. Nov. 2026, 18:05"],
           "end": "9. Nov. 2026, 10:15", "deadlines": ["31. Dezember 2026", "31. Mai 2027"],
           "greeting": "Sehr geehrte Damen und Herren,", "page": "Seite {i} von {n}",
           "rule": "Deutschland, TKG 2021 §58 Abs. 3/4"},
    "hu": {"total": "24,00 EUR", "starts": ["2026. nov. 4. 0:10", "2026. nov. 19. 18:05"],
           "end": "2026. nov. 9. 10:15", "deadlines": ["2026. december 31.", "2027. május 31."],
           "greeting": "Tisztelt Hölgyem/Uram!", "page": "{i}. oldal, összesen {n}",
           "rule": "Németország, TKG 2021, 58. § (3) és (4) bekezdés"},
    "ru": {"total": "24,00 €", "starts": ["4 нояб. 2026 г., 00:10", "19 нояб. 2026 г., 18:05"],
           "end": "9 нояб. 2026 г., 10:15", "deadlines": ["31 декабря 2026 г.", "31 мая 2027 г."],
           "greeting": "Уважаемые господа!", "page": "Страница {i} из {n}",
           "rule": "Германия, TKG 2021, § 58 абз. 3 и 4"},
    "sw": {"total": "€ 24.00", "starts": ["4 Nov 2026 00:10", "19 Nov 2026 18:05"],
           "end": "9 Nov 2026 10:15", "deadlines": ["31 Desemba 2026", "31 Mei 2027"],
           "greeting": "Ndugu Bwana/Bibi,", "page": "Ukurasa {i} kati ya {n}",
           "rule": "Ujerumani, TKG 2021 §58(3)/(4)"},
}


def squash(text: str) -> str:
    """Every run of whitespace (NBSP, narrow NBSP, line breaks of a PDF) as one space."""
    return re.sub(r"\s+", " ", text.replace("\u202f", " ").replace("\xa0", " ")).strip()


class TextOf(HTMLParser):
    """The text of an HTML page, and a check that every element is closed in order."""
    VOID = {"meta", "br", "col", "hr", "img", "link", "input", "wbr"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def html_text(data: bytes) -> tuple[str, TextOf]:
    parser = TextOf()
    parser.feed(data.decode("utf-8"))
    parser.close()
    assert parser.stack == [], f"unclosed elements: {parser.stack}"
    return " ".join(parser.text), parser


def pdf_text(data: bytes) -> list[str]:
    doc = pypdfium2.PdfDocument(data)
    try:
        return [doc[i].get_textpage().get_text_range() for i in range(len(doc))]
    finally:
        doc.close()


def md_text(data: bytes) -> str:
    """What a Markdown reader sees: backslash escapes removed."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", data.decode("utf-8"))


def visible_text(data: bytes, fmt: str) -> str:
    if fmt == "md":
        return squash(md_text(data))
    if fmt == "html":
        return squash(html_text(data)[0])
    return squash(" ".join(pdf_text(data)))


@pytest.fixture
def claim() -> dict:
    return make_claim()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGUAGES)
def test_letter_names_amounts_dates_tickets_and_parties(claim, lang, fmt):
    text = visible_text(render(claim, fmt, lang), fmt)
    want = EXPECTED[lang]
    for needle in [want["total"], *want["starts"], want["end"], *want["deadlines"], want["greeting"],
                   "4711893", "4712050", "17 / Maria Schulz", "Jonas (Team 3)",
                   "Erika Mustermann", "Beispiel Telekom GmbH", "K-123456",
                   want["rule"], "Telekommunikationsgesetz (TKG) 2021 §58 Abs. 3 und 4",
                   HASH, "5012, 5310"]:
        assert needle in text, f"{lang}/{fmt}: {needle!r} missing"


@pytest.mark.parametrize("lang", LANGUAGES)
def test_each_item_is_a_sentence_in_the_letters_language(claim, lang):
    text = visible_text(render(claim, "md", lang), "md")
    item_text = {
        "en": ["Day 3 of the complete outage, Nov 7, 2026", "Missed technician appointment on Nov 6, 2026"],
        "de": ["3. Tag des vollständigen Ausfalls, 7. Nov. 2026", "Versäumter Technikertermin am 6. Nov. 2026"],
        "hu": ["A teljes kiesés 3. napja, 2026. nov. 7.", "Elmaradt szerelői időpont: 2026. nov. 6."],
        "ru": ["3-й день полного перерыва связи, 7 нояб. 2026 г.", "Несостоявшийся визит техника 6 нояб. 2026 г."],
        "sw": ["Siku ya 3 ya kukatika kabisa, 7 Nov 2026", "Miadi ya fundi ambayo haikutimizwa tarehe 6 Nov 2026"],
    }[lang]
    for needle in item_text:
        assert needle in text
    if lang != "en":
        # The English descriptions are the JSON's; the letter speaks its own language.
        assert "missed technician appointment" not in text


def test_pro_rata_and_month_fee_items_and_unknown_kinds(claim):
    claim["items"] = [
        {"kind": "downtime", "amount": "10.48", "basis": {"seconds": 453600, "monthly_fee": "59.99",
                                                           "period_seconds": 2592000}, "description": "pro rata"},
        {"kind": "month_fee", "amount": "59.99", "basis": {"month": "2026-11", "seconds": 468300},
         "description": "suspension over 48 h"},
        {"kind": "bonus_credit", "amount": "3.00", "basis": {}, "description": "goodwill credit offered by phone"},
        {"kind": "day", "amount": "6.00", "basis": {"date": "2026-11-07"}, "description": "day without a number"},
    ]
    text = visible_text(render(claim, "md", "de"), "md")
    assert "Anteilige Minderung des Monatsentgelts von 59,99 € für 5 Tg. 6 Std. ohne Dienst" in text
    assert "Erstattung des Monatsentgelts für November 2026" in text
    assert "goodwill credit offered by phone" in text     # unknown kind: its English description
    assert "day without a number" in text                 # incomplete basis: the same
    assert "10,48 €" in text and "3,00 €" in text


def test_unclaimed_outage_says_why_in_the_letters_language(claim):
    text = visible_text(render(claim, "html", "de"), "html")
    assert "nein (Ursache in den eigenen Geräten des Kunden)" in text
    claim["outages"][1]["why_not"] = "excluded by a clause nobody translated"
    text = visible_text(render(claim, "html", "de"), "html")
    assert "nein (excluded by a clause nobody translated)" in text


# Each pack's title in a German letter, and the German words for its source when the
# pack writes that in English (None: the source is the law's own text, kept as written).
GERMAN_RULES = {
    "pro-rata": ("anteilige Erstattung des Monatsentgelts für Ausfallzeiten",
                 "Minderung des Entgelts für die Zeit, in der die Leistung nicht erbracht wurde "
                 "(Vertrag / allgemeines Recht)"),
    "de-tkg58": ("Deutschland, TKG 2021 §58 Abs. 3/4", None),
    "uk-ofcom": ("Vereinigtes Königreich, automatische Entschädigung nach der Ofcom-Regelung",
                 "mit Ofcom vereinbarte freiwillige Selbstverpflichtung, in Kraft seit dem 1. April 2019"),
    "hu-eszr": ("Ungarn, Eszr. – NMHH-Verordnung 22/2020 (XII. 21.)", None),
    "ru-telematics": ("Russland, telematische Dienste: Regierungsverordnung Nr. 2607 vom 31.12.2021", None),
    "ke-outage-credit": ("Kenia, Gutschrift für Ausfälle nach der genehmigten Richtlinie des Anbieters",
                         "das von der Communications Authority of Kenya genehmigte Gutschriftsystem des Anbieters"),
}
# Packs whose source is the law's own text (German, Hungarian, Russian): every letter
# quotes it as written, so the reader finds the law under its real name.
IN_LAWS_OWN_LANGUAGE = {"de-tkg58", "hu-eszr", "ru-telematics"}


@pytest.mark.parametrize("name", sorted(GERMAN_RULES))
def test_rule_title_and_english_source_are_in_the_letters_language(claim, name):
    pack = rules.get(name)
    claim["rules"] = pack.describe()
    title, source = GERMAN_RULES[name]
    de = visible_text(render(claim, "md", "de"), "md")
    assert f"Diese Forderung stützt sich auf folgende Regelung: {title} (" in de
    assert pack.title not in de
    if source is None:
        assert f"{title} ({pack.source})." in de
    else:
        assert source in de and pack.source not in de
    en = visible_text(render(claim, "md", "en"), "md")
    assert f"This claim is based on {pack.title} ({pack.source})." in en
    assert title not in en


@pytest.mark.parametrize("name", sorted(IN_LAWS_OWN_LANGUAGE))
@pytest.mark.parametrize("lang", LANGUAGES)
def test_source_in_the_laws_own_language_is_quoted_as_written(claim, name, lang):
    pack = rules.get(name)
    claim["rules"] = pack.describe()
    assert f"({pack.source})." in visible_text(render(claim, "md", lang), "md")


def test_every_rule_packs_texts_are_known_so_no_pack_comes_out_in_english():
    """A pack whose title, English source, grace or why_not (not_counted) is missing
    from letter.KNOWN_RULE_TEXTS would be printed in English in every letter."""
    missing = []
    for name in rules.names():
        pack = rules.get(name)
        texts = {"title": pack.title, "grace": pack.grace, "not_counted": pack.not_counted}
        if name not in IN_LAWS_OWN_LANGUAGE:
            texts["source"] = pack.source
        missing += [f"{name}.{key}: {text!r}" for key, text in texts.items() if text not in KNOWN_RULE_TEXTS]
    assert missing == [], "add them to KNOWN_RULE_TEXTS and run: python -m wanwitness.claims.render --update"
    # ...and the German-letter test above covers every pack.
    assert sorted(GERMAN_RULES) == sorted(rules.names())


def test_notes_are_for_the_user_and_statements_for_the_isp(claim):
    """Issue 17 item 5: the claim's notes (options, how to change them, input-file
    remarks) never reach the letter; its statements do, in the letter's language."""
    claim["statements"] = [{"msgid": "I do not claim compensation for ticket %(ticket)s or for "
                                     "the interruptions it reports.",
                            "args": {"ticket": "4712050"},
                            "text": "I do not claim compensation for ticket 4712050 or for the "
                                    "interruptions it reports."}]
    for lang in LANGUAGES:
        text = visible_text(render(claim, "md", lang), "md")
        assert "partial_days" not in text and "customer's own equipment and is not claimed" not in text
    de = visible_text(render(claim, "md", "de"), "md")
    assert ("Für die Störungsmeldung 4712050 und die darin gemeldeten Unterbrechungen verlange ich "
            "keine Entschädigung.") in de
    assert "Voraussetzungen und Grenzen dieser Forderung" in de
    en = visible_text(render(claim, "md", "en"), "md")
    assert "I do not claim compensation for ticket 4712050" in en


def test_html_is_one_well_formed_page_and_escapes_user_fields(claim):
    claim["customer"]["name"] = 'Erika <script>alert("x")</script> & Co'
    claim["tickets"][0]["operator"] = "<b>17</b>"
    data = render(claim, "html", "en")
    raw = data.decode("utf-8")
    text, parser = html_text(data)
    assert "script" not in parser.tags and "b" not in parser.tags
    assert "&lt;script&gt;" in raw
    assert 'Erika <script>alert("x")</script> & Co' in text
    assert "<b>17</b>" in text
    assert parser.tags[0] == "html" and "style" in parser.tags
    assert "<link" not in raw and "src=" not in raw        # self-contained: no external files
    assert '<html lang="en">' in raw


def test_markdown_and_pdf_keep_markup_in_user_fields_as_text(claim):
    claim["customer"]["name"] = "Erika <i>Muster</i> | *Mann* & Co"
    md = render(claim, "md", "en").decode("utf-8")
    assert "\\<i\\>Muster\\</i\\> \\| \\*Mann\\* & Co" in md
    assert "Erika <i>Muster</i> | *Mann* & Co" in md_text(md.encode())
    # reportlab's paragraphs are XML: unescaped, this name would fail to render.
    assert "Erika <i>Muster</i> | *Mann* & Co" in squash(" ".join(pdf_text(render(claim, "pdf", "en"))))


def test_markdown_line_that_looks_like_a_list_stays_text(claim):
    claim["customer"]["address"] = ""          # no town: the date line is the bare date
    md = render(claim, "md", "hu").decode("utf-8").replace("\xa0", " ")
    assert "\n2026\\. december 1.\n" in md   # not an ordered list starting at 2026
    assert "| 2026. nov. 4. 0:10 |" in md     # inside a table no escape is needed


def test_markdown_tables_keep_their_shape(claim):
    claim["tickets"][0]["operator"] = "17 | Maria"
    md = render(claim, "md", "en").decode("utf-8")
    rows = [ln for ln in md.splitlines() if ln.startswith("| 4711893 ")]
    assert len(rows) == 1
    # An escaped pipe is not a column: the row has as many cells as its header.
    header = next(ln for ln in md.splitlines() if ln.startswith("| Ticket |"))
    cells = lambda ln: len(re.findall(r"(?<!\\)\|", ln))  # noqa: E731
    assert cells(rows[0]) == cells(header) == 7


@pytest.mark.parametrize("lang", LANGUAGES)
def test_pdf_pages_are_numbered_and_render_to_non_blank_pngs(claim, lang, tmp_path):
    data = render(claim, "pdf", lang)
    assert data.startswith(b"%PDF-")
    pages = pdf_text(data)
    n = len(pages)
    for i, page in enumerate(pages, 1):
        assert EXPECTED[lang]["page"].format(i=i, n=n) in squash(page)
    pngs = pdf_pages_png(data, scale=1.0)
    assert len(pngs) == n
    for i, png in enumerate(pngs, 1):
        path = tmp_path / f"{lang}-{i}.png"
        path.write_bytes(png)
        with Image.open(path) as img:
            assert img.format == "PNG"
            w, h = img.size
            assert abs(h / w - 297 / 210) < 0.01           # A4 portrait
            # Inside the 20 mm margins, some pixels must be ink (text, table rules).
            margin = round(w * 20 / 210)
            body = img.convert("L").crop((margin, margin, w - margin, h - margin))
            dark = sum(body.histogram()[:100])
            assert dark > 0.002 * body.width * body.height, f"page {i} of the {lang} letter is blank"


def test_pdf_uses_dejavu_so_hungarian_and_cyrillic_survive(claim):
    claim["customer"]["name"] = "Kőrösi Űrsula Щукина"
    text = squash(" ".join(pdf_text(render(claim, "pdf", "ru"))))
    assert "Kőrösi Űrsula Щукина" in text
    assert "Претензия о компенсации" in text
    raw = render(claim, "pdf", "hu")
    assert b"DejaVuSans" in raw and b"Helvetica" not in raw


def test_missing_font_names_the_package(claim, monkeypatch, tmp_path):
    monkeypatch.setattr(pdf, "FONT_DIR", tmp_path)
    monkeypatch.setattr(pdf.pdfmetrics, "getRegisteredFontNames", lambda: [])
    with pytest.raises(UserError, match="fonts-dejavu-core"):
        render(claim, "pdf", "en")


def test_claim_from_files_has_no_evidence_bundle(claim):
    claim["ledger"] = None
    claim["source"] = "files"
    for lang, attached in (("en", "An evidence bundle that anyone can verify with Python is attached."),
                           ("de", "Beigefügt ist ein Nachweispaket")):
        text = visible_text(render(claim, "html", lang), "html")
        assert attached not in text
    assert "not backed by the collector's ledger" in visible_text(render(claim, "md", "en"), "md")


def test_without_deadlines_tickets_or_outages_the_letter_still_reads(claim):
    claim.update(dates={}, tickets=[], outages=[], items=[], total="0.00", notes=[])
    text = visible_text(render(claim, "md", "en"), "md")
    assert "No interruption was recorded in the billing period." in text
    assert "No fault report is on record for this period." in text
    assert "Please answer by" not in text
    assert "€0.00" in text


def test_period_that_does_not_start_on_the_first(claim):
    claim["period"].update(start="2026-11-15T00:00:00+01:00", end="2026-12-15T00:00:00+01:00")
    text = visible_text(render(claim, "md", "en"), "md")
    assert "billing period Nov 15, 2026 – Dec 14, 2026" in text


@pytest.mark.parametrize("fmt,lang,word", [("docx", "en", "md, html, pdf"), ("pdf", "fr", "en, de, hu, ru, sw"),
                                           ("", "en", "md, html, pdf")])
def test_unknown_format_or_language_names_the_choices(claim, fmt, lang, word):
    with pytest.raises(UserError, match=re.escape(word)):
        render(claim, fmt, lang)


@pytest.mark.parametrize("change,field", [
    (lambda c: c["customer"].pop("name"), "customer.name"),
    (lambda c: c.pop("isp"), "isp"),
    (lambda c: c["period"].update(timezone="Mars/Olympus"), "period.timezone"),
    (lambda c: c["outages"][0].update(start="yesterday"), "start"),
    (lambda c: c.update(total="lots"), "lots"),
    (lambda c: c.update(outages="none"), "outages must be a list of objects"),
    (lambda c: c["tickets"][0].update(appointments=["tomorrow"]), "ticket 4711893: appointments"),
])
def test_broken_claims_are_user_errors_that_name_the_field(claim, change, field):
    change(claim)
    with pytest.raises(UserError, match=re.escape(field)):
        render(claim, "html", "en")


# --- the catalogs cannot silently rot ------------------------------------------------

def test_every_msgid_is_translated_in_every_catalog():
    assert catalogs.problems() == []


def test_template_matches_the_sources(tmp_path, monkeypatch):
    committed = catalogs.POT_PATH.read_text(encoding="utf-8")
    monkeypatch.setattr(catalogs, "POT_PATH", tmp_path / "wanwitness.pot")
    assert main(["--extract"]) == 0
    fresh = (tmp_path / "wanwitness.pot").read_text(encoding="utf-8")
    msgids = lambda pot: re.findall(r'^msgid ((?:".*"\n)+)', pot, re.M)  # noqa: E731
    assert msgids(fresh) == msgids(committed), "run: python -m wanwitness.claims.render --update"
    assert len(msgids(fresh)) > 50


def test_a_gap_in_a_catalog_is_reported(tmp_path, monkeypatch):
    copy_dir = tmp_path / "locale"
    shutil.copytree(catalogs.LOCALE_DIR, copy_dir)
    po = copy_dir / "hu" / "LC_MESSAGES" / "wanwitness.po"
    text = po.read_text(encoding="utf-8")
    text = text.replace('msgstr "Számítás"', 'msgstr ""')                                   # untranslated
    text = text.replace('msgstr "Forrás: %(url)s"', 'msgstr "Forrás: %(link)s"')             # wrong field
    text = re.sub(r'msgid "Legal basis"\nmsgstr "[^"]*"\n', "", text)                        # missing
    po.write_text(text, encoding="utf-8")
    monkeypatch.setattr(catalogs, "LOCALE_DIR", copy_dir)
    found = catalogs.problems()
    assert "hu: untranslated 'Calculation'" in found
    assert "hu: missing 'Legal basis'" in found
    assert any(line.startswith("hu: 'Source: %(url)s'") for line in found)
    assert main(["--check"]) == 1


def test_update_merges_new_msgids_as_untranslated(tmp_path, monkeypatch):
    copy_dir = tmp_path / "locale"
    shutil.copytree(catalogs.LOCALE_DIR, copy_dir)
    for lang in ("de", "hu", "ru", "sw"):
        po = copy_dir / lang / "LC_MESSAGES" / "wanwitness.po"
        po.write_text(re.sub(r'#[^\n]*\nmsgid "Total"\nmsgstr "[^"]*"\n', "", po.read_text(encoding="utf-8")),
                      encoding="utf-8")
    monkeypatch.setattr(catalogs, "LOCALE_DIR", copy_dir)
    monkeypatch.setattr(catalogs, "POT_PATH", copy_dir / "wanwitness.pot")
    assert "de: missing 'Total'" in catalogs.problems()
    assert main(["--update"]) == 0
    assert "de: untranslated 'Total'" in catalogs.problems()
    # Everything that was translated is kept.
    assert 'msgstr "Berechnung"' in (copy_dir / "de" / "LC_MESSAGES" / "wanwitness.po").read_text(encoding="utf-8")


# --- amounts: exactly what the claim computed -----------------------------------------

# How a reader of each language writes 11387.33: (group separator, decimal separator).
# Written out here, not taken from Babel, so a change in Babel's locale data shows.
SEPARATORS = {"en": (",", "."), "sw": (",", "."), "de": (".", ","), "hu": (" ", ","),
              "ru": (" ", ",")}
# What stands beside the number for each currency: its symbol or its ISO code.
CURRENCY_MARKS = {"EUR": ("€", "EUR"), "GBP": ("£", "GBP"), "HUF": ("Ft", "HUF"),
                  "RUB": ("₽", "RUB", "руб."), "KES": ("Ksh", "KES")}


def as_written(amount: str, lang: str) -> str:
    """'11387.33' as a reader of `lang` writes it: '11 387,33' in Hungarian."""
    group, point = SEPARATORS[lang]
    whole, _, frac = amount.partition(".")
    groups = []
    while whole:
        groups.insert(0, whole[-3:])
        whole = whole[:-3]
    return group.join(groups) + (point + frac if frac else "")


def shown_with_currency(text: str, amount: str, lang: str, currency: str) -> bool:
    """The amount, digit for digit, with the currency's mark on either side and no
    further digit after it (so '11 387' does not pass for '11 387,33')."""
    number = re.escape(as_written(amount, lang))
    marks = "|".join(re.escape(m) for m in CURRENCY_MARKS[currency])
    return re.search(rf"(?<![\d.,])(?:(?:{marks}) ?{number}|{number} ?(?:{marks}))(?![\d])",
                     text) is not None


def claim_in(currency: str, items: list[str], total: str) -> dict:
    claim = make_claim()
    claim.update(currency=currency, total=total, monthly_fee=items[-1])
    for item, amount in zip(claim["items"], items):
        item["amount"] = amount
    return claim


@pytest.mark.parametrize("currency", sorted(CURRENCY_MARKS))
@pytest.mark.parametrize("lang", LANGUAGES)
def test_every_amount_in_the_letter_is_the_claims_amount(lang, currency):
    """The Hungarian letter once showed '11 387 Ft' for a claim of 11387.33 (Babel 2.19
    gives HUF no decimals): a letter must never say less, or more, than its evidence."""
    items, total = ["1198.67", "1198.66", "8990.00"], "11387.33"
    claim = claim_in(currency, items, total)
    for fmt in FORMATS:
        text = visible_text(render(claim, fmt, lang), fmt)
        for amount in [total, *items]:
            assert shown_with_currency(text, amount, lang, currency), \
                f"{fmt} letter in {lang} does not show {amount} {currency}: {text[:2000]}"
    # A claim written in whole units (a claim file edited by hand) keeps whole units.
    claim = claim_in(currency, ["600", "600", "1200"], "2400")
    text = visible_text(render(claim, "md", lang), "md")
    assert shown_with_currency(text, "2400", lang, currency)
    assert not shown_with_currency(text, "2400.00", lang, currency)


@pytest.mark.parametrize("amount", ["NaN", "Infinity", "-inf", "12,5"])
def test_an_amount_that_is_not_a_number_names_itself(claim, amount):
    claim["total"] = amount
    with pytest.raises(UserError, match=re.escape(repr(amount))):
        render(claim, "md", "en")


# --- the sample tool -----------------------------------------------------------------

def test_sample_writes_every_language_and_format_with_png_pages(claim, tmp_path, capsys):
    src = tmp_path / "claim.json"
    src.write_text(json.dumps(claim), encoding="utf-8")
    out = tmp_path / "letters"
    assert main(["--sample", str(out), "--claim", str(src)]) == 0
    for lang in LANGUAGES:
        for fmt in FORMATS:
            assert (out / f"letter-{lang}.{fmt}").stat().st_size > 1000
        n = len(pdf_text((out / f"letter-{lang}.pdf").read_bytes()))
        pngs = sorted(out.glob(f"letter-{lang}-p*.png"))
        assert len(pngs) == n
        for p in pngs:
            with Image.open(io.BytesIO(p.read_bytes())) as img:
                assert img.format == "PNG"


def test_sample_built_in_claim_renders(tmp_path):
    assert main(["--sample", str(tmp_path)]) == 0
    text = visible_text((tmp_path / "letter-hu.md").read_bytes(), "md")
    assert "Tisztelt Hölgyem/Uram!" in text and "11 387,33 Ft" in text


def test_sample_with_a_bad_claim_file_is_a_one_line_error(tmp_path, capsys):
    bad = tmp_path / "claim.json"
    bad.write_text("{not json", encoding="utf-8")
    assert main(["--sample", str(tmp_path / "out"), "--claim", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wanwitness: ") and "claim.json" in err and err.count("\n") == 1


def test_render_does_not_change_the_claim(claim):
    before = copy.deepcopy(claim)
    for fmt in FORMATS:
        render(claim, fmt, "hu")
    assert claim == before
