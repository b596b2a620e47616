"""`wanwitness flash` and `wanwitness boards`: MicroPython onto a board; the board profiles."""

from __future__ import annotations

from pathlib import Path

import click

from wanwitness.errors import UserError


def register(cli: click.Group) -> None:
    @cli.command("flash")
    @click.option("--port", required=True, metavar="PORT",
                  help="The board's serial port: /dev/ttyUSB0, /dev/ttyACM0, /dev/cu.usbserial-*, COM3.")
    @click.option("--board", "board", required=True, metavar="PROFILE",
                  help="Board profile (`wanwitness boards`), or the path of a profile .json.")
    @click.option("--firmware", type=click.Path(dir_okay=False, path_type=Path),
                  help="MicroPython image (.bin) to write "
                       "(default: the latest stable one for the board, downloaded with mpflash).")
    @click.option("--baud", type=click.IntRange(9600, 5_000_000),
                  help="Baud rate for writing (default: the profile's); try 115200 on a flaky cable.")
    @click.option("--dry-run", is_flag=True, help="Print the commands, run none of them.")
    def flash(port: str, board: str, firmware: Path | None, baud: int | None, dry_run: bool) -> None:
        """Erase a board and write MicroPython onto it (esptool), after checking port, chip and image."""
        from wanwitness.boards.flash import flash_board
        from wanwitness.boards.profiles import WrongBoard, load_profile
        try:
            flash_board(load_profile(board), port, firmware, baud=baud, dry_run=dry_run,
                        echo=click.echo)
        except WrongBoard as e:
            raise UserError(e.for_option("--board")) from None

    @cli.command("boards")
    def boards() -> None:
        """List the board profiles: chip, LED sensor pins, status LED."""
        from wanwitness.boards.profiles import all_profiles
        rows = [("profile", "board", "chip", "LED sensor pins", "status LED")]
        for p in all_profiles():
            led = "none"
            if p.status_led:
                led = f"GPIO {p.status_led.pin}" + (
                    " (RGB, WS2812)" if p.status_led.kind == "ws2812"
                    else " (lit when low)" if p.status_led.active_low else "")
            rows.append((p.name, p.title, p.chip_title, ", ".join(map(str, p.sensor_pins)), led))
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[4])
        click.echo("\nflash one: wanwitness flash --port PORT --board PROFILE; "
                   "wiring: firmware/WIRING.md")
