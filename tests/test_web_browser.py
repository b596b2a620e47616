"""The web UI in a real headless Chromium (Debian's `chromium`, driven by Playwright):
what a user sees and does, at a desktop and a phone width. Screenshots go to
build/artifacts/web/ (WANWITNESS_ARTIFACTS to move them), to be looked at."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from tests.test_web import OUT_FROM, Web, seed, seed_latency, seeded_web
from wanwitness.store import open_store
from wanwitness.web import auth

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = Path(os.environ.get("WANWITNESS_ARTIFACTS", ROOT / "build" / "artifacts")) / "web"
CHROMIUM = os.environ.get("WANWITNESS_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}  # a current phone, CSS pixels

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no Chromium at {CHROMIUM}: apt-get install chromium (./dev test does), "
                    "or set WANWITNESS_CHROMIUM")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield b
        b.close()


@pytest.fixture
def web(tmp_path):
    with seeded_web(tmp_path) as w:
        yield w


def page_at(browser, size: dict) -> Page:
    context = browser.new_context(viewport=size, locale="en-GB", timezone_id="Europe/Berlin")
    return context.new_page()


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


@pytest.mark.parametrize("size, label", [(DESKTOP, "desktop"), (PHONE, "phone")])
def test_now_shows_each_line_state_with_a_running_timer(browser, web, size, label):
    page = page_at(browser, size)
    page.goto(web.url("/"))
    home = page.locator('[data-agent="home"]')
    expect(home.locator(".badge")).to_have_text("local down")
    expect(home).to_contain_text("since 2026-11-03 12:50:00")
    expect(home).to_contain_text("heap 23456 B free")
    expect(home).to_contain_text("Wi-Fi -61 dBm")
    expect(home).to_contain_text("last reset WDT_RESET")
    expect(page.locator('[data-agent="attic"] .badge')).to_have_text("never seen")
    # The timer runs in the browser, from the server's now (NOW + 1 min: 11 minutes in).
    timer = home.locator(".timer")
    expect(timer).to_have_text(re.compile(r"^\(11m 0\ds\)$"))
    first = timer.inner_text()
    page.wait_for_timeout(1200)
    assert timer.inner_text() != first
    # Nothing is wider than the screen (the phone must not scroll sideways).
    assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
    shot(page, f"now-{label}")
    page.context.close()


@pytest.mark.parametrize("size, label", [(DESKTOP, "desktop"), (PHONE, "phone")])
def test_outages_are_listed_in_local_time_and_filtered_by_class(browser, web, size, label):
    page = page_at(browser, size)
    page.goto(web.url("/outages"))
    rows = page.locator("table.outages tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0)).to_contain_text("isp down")
    expect(rows.nth(0)).to_contain_text("2026-11-03 08:00:00")  # 07:00Z in Berlin
    expect(rows.nth(0)).to_contain_text("30m 00s")
    expect(rows.nth(1)).to_contain_text("ongoing")
    shot(page, f"outages-{label}")
    page.select_option("select[name=class]", "isp_down")
    page.click("form.filters button")
    expect(rows).to_have_count(1)
    assert "class=isp_down" in page.url
    with page.expect_download() as got:
        page.click("text=CSV")
    csv = Path(got.value.path()).read_text()
    assert csv.splitlines()[1].startswith("home,isp_down,2026-11-03T07:00:00.000Z")
    page.context.close()


def test_a_ticket_is_added_through_the_form_and_closed(browser, web):
    page = page_at(browser, PHONE)
    page.goto(web.url("/tickets"))
    expect(page.locator("p.empty")).to_have_text("No tickets yet.")
    page.fill("form.ticket-add input[name=number]", "4711")
    page.fill("form.ticket-add input[name=opened]", "2026-11-03 08:10")
    page.select_option("form.ticket-add select[name=channel]", "phone")
    page.fill("form.ticket-add input[name=operator]", "17 / Maria")
    page.click("text=Add ticket")
    row = page.locator("table.tickets tbody tr")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("4711")
    expect(row).to_contain_text("2026-11-03 08:10:00")
    expect(row).to_contain_text("17 / Maria")
    expect(row.locator("td").nth(5)).to_have_text("1")  # linked to the isp_down by time
    shot(page, "tickets-phone")
    page.click("text=Closed now")
    expect(row.locator("td").nth(2)).not_to_have_text("open")
    # A mistake is shown with what was typed kept.
    page.fill("form.ticket-add input[name=number]", "4712")
    page.fill("form.ticket-add input[name=opened]", "last Tuesday")
    page.fill("form.ticket-add input[name=operator]", "Bob")
    page.click("text=Add ticket")
    expect(page.locator("p.error")).to_contain_text("not a date/time")
    expect(page.locator("form.ticket-add input[name=operator]")).to_have_value("Bob")
    page.context.close()


def test_with_a_password_the_browser_logs_in_and_out(browser, tmp_path):
    store = seed(open_store(f"sqlite:///{tmp_path}/w.db"))
    auth.set_password(store, "correct horse")
    web = Web(store, loopback_only=False)
    try:
        page = page_at(browser, DESKTOP)
        page.goto(web.url("/outages"))
        assert re.search(r"/login\?next=/outages$", page.url)
        page.fill("input[name=password]", "wrong one")
        page.click("button:has-text('Log in')")
        expect(page.locator("p.error")).to_have_text("wrong password")
        page.fill("input[name=password]", "correct horse")
        page.click("button:has-text('Log in')")
        expect(page.locator("h1")).to_have_text("Outages")
        cookie = next(c for c in page.context.cookies() if c["name"] == "wanwitness_session")
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        page.click("text=Log out")
        expect(page.locator("h1")).to_have_text("Log in")
        page.goto(web.url("/"))
        assert "/login" in page.url
        page.context.close()
    finally:
        web.close()
        store.dispose()


def test_the_outage_filter_takes_local_times_and_exports_the_same_rows(browser, web):
    page = page_at(browser, DESKTOP)
    page.goto(web.url("/outages"))
    # 12:00 in Berlin is 11:00Z: after the isp_down, before the local_down.
    page.fill("input[name=since]", "2026-11-03 12:00")
    page.click("form.filters button")
    rows = page.locator("table.outages tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.nth(0)).to_contain_text("local down")
    with page.expect_download() as got:
        page.click("text=CSV")
    lines = Path(got.value.path()).read_text().splitlines()
    assert len(lines) == 2 and lines[1].startswith("home,local_down,2026-11-03T11:50:00.000Z")
    page.fill("input[name=since]", "someday")
    page.click("form.filters button")
    expect(page.locator("p.error")).to_contain_text("use a date or a date and time")
    page.context.close()


def test_the_claim_page_downloads_the_pdf_letter(browser, web):
    page = page_at(browser, DESKTOP)
    page.goto(web.url("/claim"))
    page.fill("input[name=period]", "2026-11")
    page.select_option("select[name=lang]", "de")
    page.click("form.filters button")
    expect(page.locator(".claim-summary h2")).to_contain_text("2026-11")
    expect(page.locator(".claim-outages tbody tr")).to_have_count(2)
    shot(page, "claim-desktop")
    with page.expect_download() as got:
        page.click("text=letter (PDF)")
    assert got.value.suggested_filename == "claim-2026-11-de-tkg58.pdf"
    assert Path(got.value.path()).read_bytes().startswith(b"%PDF-")
    page.context.close()


@pytest.mark.parametrize("size, label", [(DESKTOP, "desktop"), (PHONE, "phone")])
def test_the_calendar_shows_the_outage_on_its_day(browser, web, size, label):
    assert web.send("POST", "/api/v1/tickets", {"number": "4711", "opened": "2026-11-03 08:10"}).ok
    page = page_at(browser, size)
    page.goto(web.url("/calendar?period=2026-11"))
    day = page.locator('.cal-row[data-date="2026-11-03"]')
    outage = day.locator('.seg[data-class="isp_down"]')
    expect(outage).to_have_count(1)
    expect(outage).to_have_attribute("title", "isp down 08:00:00–08:30:00")
    # Drawn where 08:00-08:30 is on the strip: a third of the way, 1/48 of it wide.
    strip = day.locator(".cal-strip").bounding_box()
    box = outage.bounding_box()
    assert box is not None and strip is not None
    assert abs((box["x"] - strip["x"]) / strip["width"] - 8 / 24) < 0.01
    assert abs(box["width"] / strip["width"] - 0.5 / 24) < 0.01
    expect(day.locator('.mark[data-kind="opened"]')).to_have_count(1)
    expect(page.locator('.cal-row[data-date="2026-11-06"] .mark[data-kind="deadline"]')).to_have_count(1)
    expect(page.locator('.cal-row[data-date="2026-11-02"] .seg')).to_have_count(0)
    assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
    shot(page, f"calendar-{label}")
    page.click("text=← 2026-10")
    expect(page.locator("h1")).to_have_text("Billing period 2026-10")
    page.context.close()


@pytest.mark.parametrize("size, label", [(DESKTOP, "desktop"), (PHONE, "phone")])
def test_the_latency_chart_shows_the_lost_probes_where_they_were(browser, web, size, label):
    seed_latency(web.store)
    page = page_at(browser, size)
    page.goto(web.url("/latency?agent=home&range=day"))
    expect(page.locator("figure.lat")).to_have_count(2)
    anchor = page.locator('figure.lat[data-target="198.51.100.7"]')
    expect(anchor.locator("figcaption")).to_contain_text("typically 20 ms, slowest 40 ms")
    lost = anchor.locator("rect.loss.all")
    expect(lost).to_have_count(2)
    # The first all-lost bucket (11:30 UTC, 12:30 in Berlin) sits where its time is on
    # the day's axis (the last 24 hours to 13:05 Berlin), and says so when pointed at.
    expect(lost.first.locator("title")).to_contain_text("03.11.2026 12:30: 100 probes, 100 lost")
    svg = anchor.locator("svg").bounding_box()
    box = lost.first.bounding_box()
    assert svg is not None and box is not None
    plot_x, plot_w = svg["x"] + svg["width"] * 48 / 800, svg["width"] * 748 / 800
    frac = (OUT_FROM - (OUT_FROM + 35 * 60_000 - 86_400_000)) / 86_400_000
    assert abs((box["x"] - plot_x) / plot_w - frac) < 0.01
    assert page.evaluate("document.documentElement.scrollWidth") <= size["width"]
    shot(page, f"latency-{label}")
    page.context.close()


def test_the_now_page_follows_a_change_of_state_by_itself(browser, web):
    from tests.test_web import line_back
    page = page_at(browser, PHONE)
    page.goto(web.url("/"))
    badge = page.locator('[data-agent="home"] .badge')
    expect(badge).to_have_text("local down")
    line_back(web.store)
    expect(badge).to_have_text("up", timeout=10_000)  # no reload by the user
    page.context.close()


def test_the_call_sheet_answers_the_support_script_and_keeps_the_ticket(browser, tmp_path):
    from testing.webconfig import make_config
    from tests.test_callsheet import NOW as CALL_NOW
    from tests.test_callsheet import local
    from tests.test_callsheet import seed as seed_calls
    from wanwitness.collector.timeline import iso
    store = open_store(f"sqlite:///{tmp_path}/w.db")
    at = seed_calls(store)
    # A minute after the seeded agent's last heartbeat: its isp_down is going on.
    web = Web(store, config=make_config(tmp_path), now_ms=CALL_NOW + 60_000)
    try:
        page = page_at(browser, PHONE)
        # The outage going on: the ISP's line, the router on and answering.
        page.goto(web.url("/"))
        page.click("text=What to tell them")
        sheet = page.locator(".callsheet")
        expect(sheet.locator(".callsheet-meaning")).to_have_text(
            "Your router is on and answers; the line beyond it is down.")
        # To the second, in local time (the language's own date format).
        expect(sheet.locator(".fact-start dd")).to_have_text("Nov 3, 2026, " + local(at.isp, "%-I:%M:%S %p"))
        expect(sheet).to_contain_text("K-123456")
        expect(sheet.locator(".fact-led_power dd")).to_contain_text("on")
        shot(page, "callsheet-isp_down-phone")
        # The router switched off an hour earlier: a past outage, by its start.
        page.goto(web.url(f"/callsheet?agent=home&start={iso(at.off)}"))
        expect(sheet.locator(".callsheet-meaning")).to_have_text("Your router is off (no power).")
        expect(sheet.locator(".fact-start dd")).to_contain_text(local(at.off, "%-I:%M:%S"))
        shot(page, "callsheet-router_off-phone")
        # Noting the call makes a ticket linked to this outage (a local_down: never by time).
        page.fill("input[name=number]", "CS-77")
        page.fill("input[name=operator]", "Maria / 17")
        page.click(".callsheet-note button")
        expect(page.locator("h1")).to_have_text("Tickets")
        [ticket] = web.get("/api/v1/tickets").json()
        assert ticket["number"] == "CS-77" and ticket["operator"] == "Maria / 17"
        # The router-off outage by the sheet's link (a local_down is never linked by time),
        # the ISP outage going on at the call's time by the time rule.
        assert ticket["outages"] == [f"home@{iso(at.off)}", f"home@{iso(at.isp)}"]
        page.context.close()
    finally:
        web.close()
        store.dispose()
