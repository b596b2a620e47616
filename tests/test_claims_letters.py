"""Issue 17 item 5: the letter speaks to the ISP only, in its own language.

Claims are made by the real rule packs with cases that produce notes (options in effect,
how to change them, an input-file remark) and statements (conditions relied on, what is
deliberately not claimed). Every language's letter, in every format (the PDF through its
extracted text), must carry no note at all and, except in English, no English sentence.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from tests.test_claims_render import visible_text
from tests.test_claims_rules import at, outage, tariff, ticket
from wanwitness.claims import build as b
from wanwitness.claims import rules
from wanwitness.claims.model import Ticket
from wanwitness.claims.render import FORMATS, LANGUAGES, render

CUSTOMER = {"name": "Erika Mustermann", "address": "Hauptstr. 1\n10115 Berlin", "customer_number": "K-1",
            "contract": "", "email": "", "phone": ""}
ISP = {"name": "Beispiel Telekom GmbH", "address": "Postfach 1\n53000 Bonn", "email": ""}
INPUT_REMARK = "c2-tickets.csv line 2: ticket 7's missed appointment is a bare count, dated at the report"


def _claim(pack: str, outs, tickets, tar, label: str, now: datetime, **options) -> dict:
    period = tar.period(label)
    inputs = b.Inputs("files", tar, period, outs, tickets, CUSTOMER, ISP, now, None, [INPUT_REMARK])
    p = rules.get(pack)
    return b.build(inputs, p, p.parse_options(options))


def claims() -> dict[str, dict]:
    """One claim per pack, each with notes and statements."""
    late = datetime(2027, 1, 10, tzinfo=UTC)
    out: dict[str, dict] = {}
    tz = "Europe/Berlin"
    first = outage("2026-11-03 08:00", "2026-11-04 12:00", tz)
    again = outage("2026-11-15 00:00", "2026-11-20 00:00", tz)
    long = outage("2026-11-21 09:00", "2026-11-26 14:00", tz, agent="attic")
    twin = outage("2026-11-21 09:00", "2026-11-26 14:00", tz)
    t = Ticket("A", at("2026-11-03 09:00", tz), outage_ids=(first.id, again.id), auto_linked=(first.id,))
    t2 = ticket("B", "2026-11-21 10:00", tz, [long, twin], missed=("2026-11-23 08:00",))
    t3 = ticket("C", "2026-11-21 11:00", tz, [long])
    out["de-tkg58"] = _claim("de-tkg58", [first, again, long, twin], [t, t2, t3],
                             tariff("60.00", "EUR", tz), "2026-11", late,
                             replacement_days="2026-11-24", exclude="C")
    tz = "Europe/London"
    o = outage("2025-06-02 09:00", "2025-06-10 12:00", tz)
    out["uk-ofcom"] = _claim("uk-ofcom", [o], [ticket("R1", "2025-06-02 10:00", tz, [o], declined_s=6 * 3600,
                                                      missed=("2025-06-04 08:00",))],
                             tariff("30.00", "GBP", tz), "2025-06", late)
    tz = "Europe/Budapest"
    down = outage("2026-11-02 09:00", "2026-11-05 12:00", tz)
    slow = outage("2026-11-05 12:00", "2026-11-07 09:00", tz, "degraded")
    pause = outage("2026-11-20 00:00", "2026-11-23 00:00", tz)
    out["hu-eszr"] = _claim("hu-eszr", [down, slow, pause],
                            [ticket("H1", "2026-11-02 10:00", tz, [down, slow], declined_s=3 * 3600)],
                            tariff("12000", "HUF", tz), "2026-11", late, classes="isp_down,degraded",
                            suspended=pause.id)
    tz = "Europe/Moscow"
    o = outage("2026-11-03 08:00", "2026-11-03 18:00", tz)
    out["ru-telematics"] = _claim("ru-telematics", [o], [], tariff("900", "RUB", tz), "2026-11",
                                  datetime(2026, 11, 20, tzinfo=UTC), filed_on="2026-12-02")
    tz = "Africa/Nairobi"
    outs = [outage(f"2026-11-0{d} 08:00", f"2026-11-0{d} 13:00", tz) for d in (3, 4, 5)]
    short = outage("2026-11-07 08:00", "2026-11-07 08:01", tz)
    out["ke-outage-credit"] = _claim("ke-outage-credit", outs + [short], [], tariff("3000", "KES", tz),
                                     "2026-11", late, credit_per_hour="100", cap_pct="20",
                                     min_outage_s="600")
    tz = "Europe/Berlin"
    dns = outage("2026-11-05 10:00", "2026-11-05 16:00", tz, "dns_down")
    local = outage("2026-11-06 10:00", "2026-11-06 11:00", tz, "local_down")
    out["pro-rata"] = _claim("pro-rata", [first, dns, local], [], tariff("39.99", "EUR", tz), "2026-11",
                             late, classes="isp_down,dns_down")
    return out


CLAIMS = claims()

# What may stay as written in any language: the parties, proper names of laws, schemes
# and bodies, and wanwitness's own name.
AS_WRITTEN = [
    "Erika Mustermann", "Beispiel Telekom GmbH", "Hauptstr. 1", "Postfach 1", "Berlin", "Bonn",
    "Kenya Information and Communications (Consumer Protection) Regulations, 2026",
    "Communications Authority of Kenya", "Telekommunikationsgesetz (TKG) 2021", "Ofcom",
    "wanwitness", "Python", "SHA-256",
]
# Words that only English uses among the letters' languages (not "a", "in", "an", which
# Hungarian or German use too): three of them in a row are an English sentence.
ENGLISH = set("""the of and is not by for with this that from on to are be was were has have
its which per than after before under or at as day days claim claimed option options outage
outages count counted set only been such no because during any more less paid pay service
partly restored effect none true false seen once one time report reported fault ticket
tickets interruption interruptions compensation amount amounts fee monthly month period hour
hours calendar working provider customer configure configuration rule within deadline repair
repaired new link linked hand you your may must should can would will there their them""".split())


def english_runs(text: str) -> list[str]:
    for name in AS_WRITTEN:
        text = text.replace(name, " ")
    text = re.sub(r"https?://\S+", " ", text)
    runs, run = [], []
    for word in re.findall(r"[A-Za-z_]+|[^\sA-Za-z_]+", text):
        if word.lower() in ENGLISH:
            run.append(word)
            continue
        if len(run) >= 3:
            runs.append(" ".join(run))
        run = []
    if len(run) >= 3:
        runs.append(" ".join(run))
    return runs


def test_the_cases_make_notes_and_statements():
    for name, claim in CLAIMS.items():
        assert INPUT_REMARK in claim["notes"], name
        assert any(n.startswith("options in effect") for n in claim["notes"]), name
    for name in ("de-tkg58", "uk-ofcom", "hu-eszr", "ru-telematics", "ke-outage-credit"):
        assert CLAIMS[name]["statements"], name
    assert sorted(CLAIMS) == sorted(rules.names())


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("lang", LANGUAGES)
@pytest.mark.parametrize("name", sorted(CLAIMS))
def test_the_letter_has_no_note_and_no_untranslated_english(name, lang, fmt):
    claim = CLAIMS[name]
    text = visible_text(render(claim, fmt, lang), fmt)
    for note in claim["notes"]:
        assert note[:40] not in text, f"{name} {lang}/{fmt}: a note for the user is in the letter: {note!r}"
    for word in ("partial_days", "repaired_after_s", "min_outage_s", "daily_base", "pay_fix_day",
                 "c2-tickets.csv", "options in effect"):
        assert word not in text, f"{name} {lang}/{fmt}: {word!r} is in the letter"
    if lang == "en":
        for st in claim["statements"]:
            assert st["text"].split("%")[0][:30] in text.replace("\xa0", " ") or "%(" in st["msgid"]
        return
    for st in claim["statements"]:
        assert st["text"] not in text, f"{name} {lang}/{fmt}: untranslated statement {st['text']!r}"
    runs = english_runs(text)
    assert runs == [], f"{name} {lang}/{fmt}: English in the letter: {runs}"


def test_the_detector_finds_english():
    assert english_runs("Sehr geehrte Damen und Herren, set option partial_days=true to count such days") \
        == ["true to count such days"]
    assert english_runs("options in effect: partial_days=false") == []        # needs a third word
    assert english_runs("keine Entschädigung (claimed for the day)") == ["claimed for the day"]
    # the letter before issue 17: its notes section in a German letter
    old = "Hinweise: options in effect: partial_days=false, exclude=(none); 2026-11-06: service " \
          "partly restored that day (14.0 h of outage): not paid; set option partial_days=true"
    assert english_runs(old) != []


def test_statement_amounts_and_dates_are_formatted_for_the_letter():
    de = visible_text(render(CLAIMS["de-tkg58"], "md", "de"), "md")
    # the rate of a day: "EUR 5" as German money, the fee too
    assert "5 € oder 10 % des Monatsentgelts von 60,00 €" in de
    assert ("Für folgende Tage wird keine Entschädigung verlangt, weil Sie an ihnen eine "
            "Ersatzleistung bereitgestellt haben: 24. Nov. 2026.") in de
    hu = visible_text(render(CLAIMS["hu-eszr"], "md", "hu"), "md")
    assert "8 × " not in hu or "átlagos napi díj" in hu
    assert Decimal(CLAIMS["hu-eszr"]["total"]) > 0
