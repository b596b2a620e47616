"""`wanwitness deploy | calibrate | console`: the agent onto a board, its sensors, its log."""

from __future__ import annotations

import sys
import time
from datetime import datetime
from pathlib import Path

import click

from wanwitness.errors import UserError

port_option = click.option("--port", required=True, metavar="PORT",
                           help="The board's serial port: /dev/ttyUSB0, /dev/ttyACM0, "
                                "/dev/cu.usbserial-*, COM3.")


def _config_path(agent: str | None, config: Path | None) -> Path:
    if config is not None:
        return config
    if agent is None:
        raise UserError("give --agent NAME (its config is where `wanwitness agent add` wrote "
                        "it) or --config FILE")
    from wanwitness.collector.agents import find_board_config
    return find_board_config(agent)


def register(cli: click.Group) -> None:
    cli.add_command(deploy_cmd)
    cli.add_command(calibrate_cmd)
    cli.add_command(console_cmd)


@click.command("deploy")
@port_option
@click.option("--agent", "agent", required=True, metavar="NAME",
              help="The agent (from `wanwitness agent add NAME`).")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              help="Its config.json (default: the one `agent add NAME` wrote, in the user data dir).")
@click.option("--board", metavar="PROFILE",
              help="Board profile (`wanwitness boards`); default: the one for the chip found.")
@click.option("--no-reset", is_flag=True, help="Do not reset the board afterwards.")
@click.option("--watch", "watch_s", default=8.0, show_default=True, type=click.FloatRange(0, 600),
              help="Seconds of the board's log to show after the reset (0: none).")
def deploy_cmd(port: str, agent: str, config: Path | None, board: str | None,
               no_reset: bool, watch_s: float) -> None:
    """Copy the agent and its config.json onto the board (only what changed), verify
    every file by its SHA-256, then reset the board so the agent starts."""
    from wanwitness.boards.deploy import deploy
    from wanwitness.boards.profiles import WrongBoard
    try:
        deploy(port, agent, _config_path(agent, config), board=board, reset=not no_reset,
               watch_s=watch_s, log=click.echo)
    except WrongBoard as e:
        raise UserError(e.for_option("--board")) from None


@click.command("calibrate")
@port_option
@click.option("--agent", metavar="NAME", help="The agent whose LED sensors to calibrate.")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path),
              help="Its config.json (default: the one `agent add NAME` wrote).")
@click.option("--seconds", default=30.0, show_default=True, type=click.FloatRange(2, 600),
              help="How long to watch.")
@click.option("--yes", is_flag=True, help="Write the levels without asking.")
def calibrate_cmd(port: str, agent: str | None, config: Path | None, seconds: float,
                  yes: bool) -> None:
    """Show live light readings of each LED sensor while you watch the router, then
    suggest dark/bright levels and write them into the agent's config."""
    from wanwitness.boards import calibrate as cal
    from wanwitness.boards.board_config import read as load_config
    from wanwitness.boards.deploy import deploy
    from wanwitness.boards.link import BoardLink
    path = _config_path(agent, config)
    conf = load_config(path)
    leds = conf.get("leds") or []
    if not leds:
        raise UserError(f"{path} has no LED sensors (leds: [{{\"pin\": 34, \"role\": "
                        "\"internet\"}, ...]): add the pins you wired (firmware/WIRING.md)")
    channels = []
    for i, led in enumerate(leds):
        if not isinstance(led, dict) or not isinstance(led.get("pin"), int):
            raise UserError(f"{path}: leds[{i}] needs a \"pin\" number")
        channels.append(cal.Channel(led["pin"], str(led.get("role", "?"))))
    live = sys.stdout.isatty()
    shown = [0]

    def show(text: str) -> None:
        if live and shown[0]:
            click.echo(f"\x1b[{shown[0]}A", nl=False)  # redraw in place
        click.echo(text)
        shown[0] = text.count("\n") + 1

    with BoardLink(port) as link:
        link.enter()
        if link.agent_running():
            click.echo(f"{port}: the agent is running: rebooting into maintenance to sample")
            link.maintenance("calibrate")
        click.echo(f"watching {len(channels)} sensor(s) for {seconds:g} s: let the router's "
                   "LEDs go through their states (e.g. unplug the WAN cable for 10 s)")
        cal.run_sampling(link, channels, seconds, show)
        link.reset()  # back to the agent (unchanged config until written below)
    suggestions = []
    for i, ch in enumerate(channels):
        s = ch.suggestion()
        if s is None:
            click.echo(f"GPIO{ch.pin} ({ch.role}): no contrast seen (never more than "
                       f"{cal.MIN_SPAN} counts apart): is the sensor over the LED, shaded, "
                       "and did the LED change while watching? Left as it is.")
        else:
            click.echo(f"GPIO{ch.pin} ({ch.role}): dark {s[0]}, bright {s[1]}")
            suggestions.append((i, s))
    if not suggestions:
        raise UserError("nothing to write: no sensor showed a change")
    if not yes and not click.confirm(f"write these levels into {path} and the board?"):
        click.echo("nothing written")
        return
    for i, (dark, bright) in suggestions:
        conf["leds"][i]["levels"] = [dark, bright]
    from wanwitness.collector.agents import write_board_config
    write_board_config(path, conf)  # atomic, and 0600: the file holds the agent's password
    click.echo(f"{path} updated")
    deploy(port, conf.get("id", ""), path, log=click.echo)


@click.command("console")
@port_option
@click.option("--seconds", type=click.FloatRange(0.1), help="Stop after this long (default: Ctrl-C).")
@click.option("--baud", default=115200, show_default=True, type=int)
def console_cmd(port: str, seconds: float | None, baud: int) -> None:
    """Print the board's log live, each line with the time it arrived. Only listens:
    the agent keeps running."""
    import serial

    from wanwitness.boards.link import check_port
    check_port(port)
    end = None if seconds is None else time.monotonic() + seconds
    s = None
    partial = b""
    try:
        while end is None or time.monotonic() < end:
            if s is None:
                try:
                    s = serial.Serial(port, baud, timeout=0.2, exclusive=True)
                except (OSError, serial.SerialException):
                    time.sleep(0.5)  # a USB board re-enumerating after its reset
                    continue
            try:
                chunk = s.read(4096)
            except (OSError, serial.SerialException):
                s.close()
                s = None
                click.echo(f"--- {port} went away; waiting for it", err=True)
                continue
            partial += chunk
            *lines, partial = partial.split(b"\n")
            for raw in lines:
                stamp = datetime.now().strftime("%H:%M:%S.%f")[:-3]
                click.echo(f"{stamp} {raw.decode('utf-8', 'replace').rstrip(chr(13))}")
    finally:
        if s is not None:
            s.close()
