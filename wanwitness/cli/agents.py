"""`wanwitness agent ...`: register agents, their board config, the virtual board."""

from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from wanwitness.cli.common import Ctx, db_option
from wanwitness.config import Config
from wanwitness.errors import UserError


@click.group()
def agent() -> None:
    """Register boards and write their config.json."""


@agent.command("add")
@db_option
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the board's config.json (default: NAME.config.json in the "
                   "user data dir, readable by you only).")
@click.option("--broker-host", metavar="HOST", help="Host the board connects to "
              "(default: [agents] broker_host, else this machine's name).")
@click.option("--broker-port", type=click.IntRange(1, 65535), help="Port the board connects to.")
@click.option("--broker-other", "others", multiple=True, metavar="HOST[:PORT]",
              help="Another broker the board tries when the first cannot be reached (same "
                   "credentials; port: --broker-port's). Repeatable, up to 3.")
@click.option("--wifi-ssid", default="", help="Wi-Fi network name for the board.")
@click.option("--wifi-password", default="", help="Wi-Fi password for the board.")
@click.option("--hb", "hb_s", default=30, show_default=True, type=click.IntRange(5, 3600),
              help="Heartbeat period in seconds.")
@click.option("--led", "leds", multiple=True, metavar="GPIO:ROLE",
              help="A light sensor: its GPIO and the LED it watches (internet, wan, power, "
                   "lan, wifi), e.g. --led 32:internet --led 33:power. Repeatable, up to 4.")
@click.pass_obj
def agent_add(obj: Ctx, db: str | None, name: str, out: Path | None, broker_host: str | None,
              broker_port: int | None, others: tuple[str, ...], wifi_ssid: str,
              wifi_password: str, hb_s: int, leds: tuple[str, ...]) -> None:
    """Create agent NAME with new broker credentials and write its config.json."""
    from wanwitness.collector.agents import (
        add_agent,
        board_config,
        board_config_path,
        default_broker_host,
        write_board_config,
    )
    conf = obj.config
    url = conf.broker.url
    host = broker_host or conf.agents.broker_host or default_broker_host()
    tls, port, ca = _broker_tls(conf, host)
    if broker_port is None:
        broker_port = port
    out = out or board_config_path(name)
    sensors = _parse_leds(leds)
    more = _parse_others(others, broker_port)
    store = obj.store(db)
    password = add_agent(store, name, hb_s=hb_s)
    board = board_config(name, password, broker_host=host, broker_port=broker_port, tls=tls,
                         ca=ca, prefix=conf.broker.prefix, hb_s=hb_s, wifi_ssid=wifi_ssid,
                         wifi_password=wifi_password, others=more)
    if sensors:
        board["leds"] = sensors
    write_board_config(out, board)
    click.echo(f"agent {name!r} added; its config.json (with its password) is {out}")
    click.echo(f"  it connects to {host}:{broker_port} "
               + ("over TLS, trusting only the broker's CA" if tls else
                  "in plain MQTT (`wanwitness broker tls init` sets up TLS)"))
    if more:
        click.echo("  when it cannot reach that broker, it tries "
                   + ", then ".join(f"{h}:{p}" for h, p in more))
    if not wifi_ssid:
        click.echo("  fill in wifi.ssid and wifi.password before deploying it to the board")
    if not sensors:
        click.echo("  no LED sensors (--led GPIO:ROLE): the agent will judge the line by probes only")
    if url:
        click.echo("  external broker: run `wanwitness broker mosquitto-config` again "
                   "so the broker knows the new agent")


def _parse_others(values: tuple[str, ...], port: int) -> tuple[tuple[str, int], ...]:
    """--broker-other HOST[:PORT] values -> ((host, port), ...), each checked."""
    if len(values) > 3:
        raise UserError(f"--broker-other: at most 3 more brokers, got {len(values)}")
    out = []
    for value in values:
        host, port_text = value.strip(), ""
        if host.count(":") == 1:
            host, port_text = host.split(":")
        if not host or len(host) > 253 or any(c.isspace() or c in "[]:/@" for c in host):
            raise UserError(f"--broker-other {value!r}: expected HOST or HOST:PORT, "
                            "e.g. broker2.example.net:8883")
        if port_text and not (port_text.isdigit() and 1 <= int(port_text) <= 65535):
            raise UserError(f"--broker-other {value!r}: the port must be 1-65535")
        out.append((host, int(port_text) if port_text else port))
    return tuple(out)


@agent.command("run")
@click.option("--virtual", is_flag=True, required=True,
              help="Run on the virtual board (MicroPython unix port); the only choice without a board.")
@click.option("--config", "board_config_path",
              type=click.Path(dir_okay=False, path_type=Path),
              help="The agent's config.json (runs the agent from this checkout).")
@click.option("--serial", "serial_link", type=click.Path(path_type=Path),
              help="Instead: a bare board behind a serial port made at this path (a pty), "
                   "to deploy onto with `wanwitness deploy --port PATH`.")
@click.option("--flash", type=click.Path(dir_okay=False, path_type=Path),
              help="Flash image file (default: CONFIG's name with .flash); kept across runs.")
@click.option("--control", type=click.Path(dir_okay=False, path_type=Path),
              help="Control file for LEDs and Wi-Fi (firmware/boards/virtual/README.md).")
@click.option("--chip", type=click.Choice(["esp32", "esp32c3", "esp32s2", "esp32s3"]),
              help="Which ESP32 the virtual board is (its ADC pins); default esp32.")
@click.option("--heap", default="256K", show_default=True, help="MicroPython heap size.")
@click.option("--micropython", "micropython", type=click.Path(dir_okay=False, path_type=Path),
              help="The MicroPython binary (default: the one installed with wanwitness).")
@click.option("--frozen", is_flag=True,
              help="The binary has the agent frozen in (`./dev mp32`): run that, not this "
                   "checkout's agent files.")
@click.option("--ticks-start", type=click.IntRange(0, (1 << 30) - 1), metavar="MS",
              help="Start the board's time.ticks_ms() here (within a second; root: a time "
                   "namespace), e.g. 1073441824, five minutes before a 32-bit port's ticks "
                   "wrap at 2**30 as after 12.4 days up.")
def agent_run(virtual: bool, board_config_path: Path | None, serial_link: Path | None,
              flash: Path | None, control: Path | None, chip: str | None, heap: str,
              micropython: Path | None, frozen: bool, ticks_start: int | None) -> None:
    """Run the real agent on the virtual board until Ctrl-C."""
    from wanwitness.virtual.supervisor import run_virtual
    if serial_link is not None:
        if board_config_path is not None:
            raise UserError("--serial and --config exclude each other: a board on a serial "
                            "line gets its config.json with `wanwitness deploy`")
        if flash is None:
            raise UserError("--serial needs --flash IMAGE (the board's flash, kept across runs)")
        from wanwitness.virtual.serial_line import SerialBoard
        sys.exit(run_virtual(None, flash, control_path=control, heap=heap, chip=chip,
                             board_class=SerialBoard, link=serial_link, log=sys.stderr))
    if board_config_path is None:
        raise UserError("give --config CONFIG.json (the agent from this checkout) or "
                        "--serial PATH --flash IMAGE (a bare board to deploy onto)")
    sys.exit(run_virtual(board_config_path, flash, control_path=control, heap=heap, chip=chip,
                         micropython=micropython, frozen=frozen, ticks_start=ticks_start))


@agent.command("list")
@db_option
@click.pass_obj
def agent_list(obj: Ctx, db: str | None) -> None:
    """List the registered agents."""
    from wanwitness.collector.agents import list_agents
    from wanwitness.collector.timeline import iso
    rows = list_agents(obj.store(db))
    if not rows:
        click.echo("no agents (wanwitness agent add NAME)")
        return
    click.echo(f"{'agent':<20} {'state':<8} {'hb':>5} {'acked seq':>10}  last heard (UTC)")
    for a in rows:
        heard = iso(a.last_recv_ms) if a.last_recv_ms else "never"
        click.echo(f"{a.id:<20} {'active' if a.enabled else 'revoked':<8} {a.hb_s:>4}s "
                   f"{a.ack_seq:>10}  {heard}")


@agent.command("revoke")
@db_option
@click.argument("name")
@click.pass_obj
def agent_revoke(obj: Ctx, db: str | None, name: str) -> None:
    """Refuse NAME's connections and records from now on (its ledger stays)."""
    from wanwitness.collector.agents import set_enabled
    set_enabled(obj.store(db), name, False)
    click.echo(f"agent {name!r} revoked")
    if obj.config.broker.url:
        # The embedded broker disconnects it within seconds; Mosquitto does when its
        # password file no longer has it and it reloads.
        click.echo("With Mosquitto: `wanwitness broker mosquitto-config`, then reload Mosquitto "
                   "(systemctl reload mosquitto): that disconnects it.")


@agent.command("reset-password")
@db_option
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="The config.json to rewrite (default: the one `agent add NAME` wrote).")
@click.pass_obj
def agent_reset_password(obj: Ctx, db: str | None, name: str, out: Path | None) -> None:
    """New broker password for NAME (re-enables it); rewrites its config.json."""
    import json

    from wanwitness.collector.agents import find_board_config, reset_password, write_board_config
    password = reset_password(obj.store(db), name)
    out = out or find_board_config(name)
    board = {}
    if out.exists():
        try:
            board = json.loads(out.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise UserError(f"{out}: not a readable config.json; pass --out NEWFILE") from None
    board.setdefault("broker", {})["password"] = password
    board["broker"]["user"] = name
    board["id"] = name
    write_board_config(out, board)
    click.echo(f"new password for {name!r} written to {out}")


def _broker_tls(conf: Config, host: str) -> tuple[bool, int, str | None]:
    """(tls, port, CA PEM) for a new board: TLS when the broker speaks it, that is when
    [broker] url is mqtts:// or the broker has the certificate of `broker tls init` (the
    embedded broker's TLS listener, or the one in `broker mosquitto-config`'s snippet)."""
    from wanwitness.broker.tls import configured_ca, configured_server, read_ca_pem, san_names
    url = conf.broker.url
    if url.startswith("mqtts://"):
        ca_path = Path(conf.broker.ca_file) if conf.broker.ca_file else configured_ca(conf.broker, conf.path)
        if ca_path is None:
            raise UserError(f"[broker] url {url} is mqtts://: the board needs the CA certificate "
                            "that signed the broker's: set [broker] ca_file (or tls_ca)")
        return True, urlsplit(url).port or 8883, read_ca_pem(ca_path, "the broker's CA certificate")
    tls_at = conf.broker.tls_listen
    server = configured_server(conf.broker, conf.path) if tls_at else None
    if tls_at is None or server is None:
        return False, (urlsplit(url).port or 1883) if url else conf.broker.listen[1], None
    ca_path = configured_ca(conf.broker, conf.path)
    if ca_path is None:
        raise UserError(f"the embedded broker serves TLS with {server[0]}, but no CA certificate "
                        "is known for the boards: set [broker] tls_ca")
    ca = read_ca_pem(ca_path, "[broker] tls_ca")
    names = san_names(server[0])
    if host.lower() not in [n.lower() for n in names]:
        raise UserError(f"the broker's certificate {server[0]} is not valid for {host!r} (only for "
                        f"{', '.join(names)}), so the board would refuse it: give --broker-host one "
                        f"of those, or add it: wanwitness broker tls init --force --host {host}")
    return True, tls_at[1], ca


LED_ROLES = ("internet", "wan", "power", "lan", "wifi")  # agent/config.py LED_ROLES


def _parse_leds(specs: tuple[str, ...]) -> list[dict]:
    out, pins = [], set()
    for spec in specs:
        pin_text, sep, role = spec.partition(":")
        if not sep or not pin_text.strip().isdigit() or role not in LED_ROLES:
            raise UserError(f"--led {spec!r}: expected GPIO:ROLE such as 32:internet "
                            f"(roles: {', '.join(LED_ROLES)})")
        pin = int(pin_text)
        if pin in pins:
            raise UserError(f"--led {spec!r}: GPIO {pin} is given twice")
        pins.add(pin)
        out.append({"pin": pin, "role": role})
    if len(out) > 4:
        raise UserError(f"--led: at most 4 sensors, {len(out)} given")
    return out
