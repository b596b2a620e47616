"""`wanwitness`: the command line. Each command is a thin wrapper over the library."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from urllib.parse import urlsplit

import click

from . import __version__
from . import config as cfg
from .errors import UserError

COLLECTOR_USER = "_collector"  # agent ids start with a letter or digit: no clash


class Ctx:
    def __init__(self, config_path: Path | None):
        self.config_path = config_path
        self._config: cfg.Config | None = None

    @property
    def config(self) -> cfg.Config:
        if self._config is None:
            self._config = cfg.load(self.config_path)
        return self._config

    def store(self, db: str | None):
        from .store import open_store
        conf = self.config  # a broken config file is reported even when --db is given
        return open_store(db or conf.get("store", "url") or None)


db_option = click.option("--db", "db", metavar="URL", envvar="WANWITNESS_DB",
                         help="Database URL (default: [store] url, else SQLite in the user data dir).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Collector config file (default: `wanwitness config path`).")
@click.version_option(__version__, prog_name="wanwitness")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None) -> None:
    """wanwitness: an independent witness for your internet line.

    An ESP32 agent watches the router and probes the internet; this collector keeps
    a tamper-evident ledger of every outage and turns it into a refund claim.
    """
    ctx.obj = Ctx(config_path)


# --- collect ----------------------------------------------------------------------

@cli.command()
@db_option
@click.option("--broker", metavar="URL", help="External broker mqtt://HOST:PORT or mqtts://HOST:PORT "
              "(default: [broker] url, else the embedded broker).")
@click.option("--listen", metavar="HOST:PORT", help="Address of the embedded broker "
              "(default: [broker] listen, 0.0.0.0:1883).")
@click.option("--prefix", metavar="PREFIX", help="Topic prefix (default: wanwitness).")
@click.pass_obj
def collect(obj: Ctx, db: str | None, broker: str | None, listen: str | None,
            prefix: str | None) -> None:
    """Receive the agents' records and keep them in the ledger (runs until Ctrl-C)."""
    from .agents import check_agent_password, list_agents
    from .collector import Collector

    conf = obj.config
    _setup_logging(conf.get("collector", "log_level"))
    prefix = _checked(cfg._prefix, prefix, "--prefix") if prefix else conf.get("broker", "prefix")
    broker_url = _checked(cfg._broker_url, broker, "--broker") if broker else conf.get("broker", "url")
    store = obj.store(db)
    embedded = None
    username, password = conf.get("broker", "username"), conf.get("broker", "password")
    if not broker_url:
        from .broker.embedded import EmbeddedBroker
        host, port = _checked(cfg._host_port, listen, "--listen") if listen else conf.get("broker", "listen")
        secret = secrets.token_urlsafe(24)

        def authenticate(user: str, pw: str) -> str | None:
            if user == COLLECTOR_USER:
                return "collector" if secrets.compare_digest(pw, secret) else None
            return "agent" if check_agent_password(store, user, pw) else None

        embedded = EmbeddedBroker(host, port, authenticate, prefix=prefix)
        embedded.start()
        broker_url = f"mqtt://{'127.0.0.1' if host in ('0.0.0.0', '::', '') else host}:{port}"
        username, password = COLLECTOR_USER, secret
    elif not username:
        username = store.setting("broker.collector_username") or ""
        password = store.setting("broker.collector_password") or ""

    collector = Collector(store, broker_url, prefix=prefix, username=username, password=password,
                          client_id=conf.get("broker", "client_id"),
                          ca_file=conf.get("broker", "ca_file"),
                          share_group=conf.get("broker", "share_group"),
                          batch_max=conf.get("collector", "batch_max"))

    def on_signal(_sig, _frame):
        collector.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    n_agents = len(list_agents(store))
    where = f"embedded broker on {embedded.url}" if embedded else f"broker {broker_url}"
    click.echo(f"wanwitness collector {__version__}: store {_safe_url(store.url)}, {where}, "
               f"prefix {prefix!r}, {n_agents} agent(s) registered. Ctrl-C stops.", err=True)
    if n_agents == 0:
        click.echo("No agents yet: add one with `wanwitness agent add NAME`.", err=True)
    try:
        collector.connect()
        if not collector.wait_connected():
            logging.getLogger("wanwitness.collector").warning(
                "no connection to %s yet; still trying", broker_url)
        collector.run()
    finally:
        collector.close()
        if embedded:
            embedded.stop()
        click.echo(f"stopped: {collector.stored} record(s) stored, "
                   f"{collector.quarantined} quarantined this run.", err=True)


# --- demo -------------------------------------------------------------------------

@cli.command()
@click.option("--dir", "workdir", default="demo", show_default=True,
              type=click.Path(file_okay=False, path_type=Path), help="Where the demo keeps its files.")
@click.option("--outage", "outage_s", default=20.0, show_default=True,
              type=click.FloatRange(5, 600), help="Length of the scripted outage in seconds.")
@click.option("--once", is_flag=True, help="Exit after the scripted outage.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--port", "broker_port", type=click.IntRange(1, 65535),
              help="Port of the embedded broker (default: a free one).")
def demo(workdir: Path, outage_s: float, once: bool, as_json: bool, broker_port: int | None) -> None:
    """Collector + the real agent on the virtual board + a scripted outage, all on loopback."""
    from .demo import run_demo
    sys.exit(run_demo(workdir, outage_s=outage_s, once=once, as_json=as_json,
                      broker_port=broker_port))


# --- verify / outages / quarantine --------------------------------------------

@cli.command()
@db_option
@click.pass_obj
def verify(obj: Ctx, db: str | None) -> None:
    """Recompute the ledger's hash chain; exit 1 at the first broken link."""
    from .ledger import verify as run_verify
    result = run_verify(obj.store(db))
    if result.ok:
        click.echo(f"ok: {result.count} record(s), head {result.head}")
        return
    where = f"link {result.broken_pos}" if result.broken_pos else "ledger"
    click.echo(f"BROKEN at {where}: {result.problem} "
               f"({result.count} link(s) verified before it)", err=True)
    sys.exit(1)


@cli.command()
@db_option
@click.option("--agent", metavar="NAME", help="Only this agent.")
@click.option("--since", metavar="WHEN", help="From this time (ISO 8601; no offset = UTC).")
@click.option("--until", metavar="WHEN", help="Up to this time (ISO 8601; no offset = UTC).")
@click.option("--json", "fmt", flag_value="json", help="JSON list of objects.")
@click.option("--csv", "fmt", flag_value="csv", help="CSV: agent,class,start,end,start_uncertainty_s,evidence.")
@click.pass_obj
def outages(obj: Ctx, db: str | None, agent: str | None, since: str | None, until: str | None,
            fmt: str | None) -> None:
    """List outages and unknown spans, times in UTC."""
    from . import timeline
    since_ms = timeline.parse_time(since, option="--since") if since else None
    until_ms = timeline.parse_time(until, option="--until") if until else None
    if since_ms is not None and until_ms is not None and until_ms <= since_ms:
        raise UserError("--until must be later than --since")
    rows = timeline.query(obj.store(db), agent=agent, since_ms=since_ms, until_ms=until_ms)
    if fmt == "json":
        click.echo(timeline.to_json(rows))
    elif fmt == "csv":
        click.echo(timeline.to_csv(rows), nl=False)
    else:
        click.echo(timeline.to_table(rows))


@cli.group()
def quarantine() -> None:
    """Messages that were refused, with the reason."""


@quarantine.command("list")
@db_option
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100000))
@click.pass_obj
def quarantine_list(obj: Ctx, db: str | None, limit: int) -> None:
    """Show the newest quarantined messages and a count per reason."""
    from .quarantine import summary
    click.echo(summary(obj.store(db), limit))


# --- agents -------------------------------------------------------------------------

@cli.group()
def agent() -> None:
    """Register boards and write their config.json."""


@agent.command("add")
@db_option
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the board's config.json (default: ./NAME.config.json).")
@click.option("--broker-host", metavar="HOST", help="Host the board connects to "
              "(default: [agents] broker_host, else this machine's name).")
@click.option("--broker-port", type=click.IntRange(1, 65535), help="Port the board connects to.")
@click.option("--wifi-ssid", default="", help="Wi-Fi network name for the board.")
@click.option("--wifi-password", default="", help="Wi-Fi password for the board.")
@click.option("--hb", "hb_s", default=30, show_default=True, type=click.IntRange(5, 3600),
              help="Heartbeat period in seconds.")
@click.option("--led", "leds", multiple=True, metavar="GPIO:ROLE",
              help="A light sensor: its GPIO and the LED it watches (internet, wan, power, "
                   "lan, wifi), e.g. --led 32:internet --led 33:power. Repeatable, up to 4.")
@click.pass_obj
def agent_add(obj: Ctx, db: str | None, name: str, out: Path | None, broker_host: str | None,
              broker_port: int | None, wifi_ssid: str, wifi_password: str, hb_s: int,
              leds: tuple[str, ...]) -> None:
    """Create agent NAME with new broker credentials and write its config.json."""
    from .agents import add_agent, board_config, default_broker_host, write_board_config
    conf = obj.config
    url = conf.get("broker", "url")
    tls = url.startswith("mqtts://")
    if broker_port is None:
        broker_port = (urlsplit(url).port or (8883 if tls else 1883)) if url else conf.get("broker", "listen")[1]
    host = broker_host or conf.get("agents", "broker_host") or default_broker_host()
    out = out or Path(f"{name}.config.json")
    sensors = _parse_leds(leds)
    store = obj.store(db)
    password = add_agent(store, name, hb_s=hb_s)
    board = board_config(name, password, broker_host=host, broker_port=broker_port, tls=tls,
                         prefix=conf.get("broker", "prefix"), hb_s=hb_s, wifi_ssid=wifi_ssid,
                         wifi_password=wifi_password)
    if sensors:
        board["leds"] = sensors
    write_board_config(out, board)
    click.echo(f"agent {name!r} added; its config.json (with its password) is {out}")
    if not wifi_ssid:
        click.echo("  fill in wifi.ssid and wifi.password before deploying it to the board")
    if not sensors:
        click.echo("  no LED sensors (--led GPIO:ROLE): the agent will judge the line by probes only")
    if url:
        click.echo("  external broker: run `wanwitness broker mosquitto-config` again "
                   "so the broker knows the new agent")


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
def agent_run(virtual: bool, board_config_path: Path | None, serial_link: Path | None,
              flash: Path | None, control: Path | None, chip: str | None, heap: str) -> None:
    """Run the real agent on the virtual board until Ctrl-C."""
    from .virtual import run_virtual
    if serial_link is not None:
        if board_config_path is not None:
            raise UserError("--serial and --config exclude each other: a board on a serial "
                            "line gets its config.json with `wanwitness deploy`")
        if flash is None:
            raise UserError("--serial needs --flash IMAGE (the board's flash, kept across runs)")
        from .vserial import SerialBoard
        sys.exit(run_virtual(None, flash, control_path=control, heap=heap, chip=chip,
                             board_class=SerialBoard, link=serial_link, log=sys.stderr))
    if board_config_path is None:
        raise UserError("give --config CONFIG.json (the agent from this checkout) or "
                        "--serial PATH --flash IMAGE (a bare board to deploy onto)")
    sys.exit(run_virtual(board_config_path, flash, control_path=control, heap=heap, chip=chip))


@agent.command("list")
@db_option
@click.pass_obj
def agent_list(obj: Ctx, db: str | None) -> None:
    """List the registered agents."""
    from .agents import list_agents
    from .timeline import iso
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
    from .agents import set_enabled
    set_enabled(obj.store(db), name, False)
    click.echo(f"agent {name!r} revoked")


@agent.command("reset-password")
@db_option
@click.argument("name")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path))
@click.pass_obj
def agent_reset_password(obj: Ctx, db: str | None, name: str, out: Path | None) -> None:
    """New broker password for NAME (re-enables it); rewrites its config.json."""
    import json
    from .agents import reset_password, write_board_config
    password = reset_password(obj.store(db), name)
    out = out or Path(f"{name}.config.json")
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


# --- broker -------------------------------------------------------------------------

@cli.group()
def broker() -> None:
    """External broker (Mosquitto) set-up."""


@broker.command("mosquitto-config")
@db_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for passwd, acl and wanwitness.conf (default: next to the config file).")
@click.option("--new-collector-password", is_flag=True, help="Replace the collector's broker password.")
@click.pass_obj
def broker_mosquitto_config(obj: Ctx, db: str | None, out: Path | None,
                            new_collector_password: bool) -> None:
    """Write a Mosquitto password file and ACL for every agent and the collector."""
    from .agents import password_hashes
    from .broker.mosquitto import write_mosquitto_config
    from .broker.passwords import hash_password, new_secret
    conf = obj.config
    store = obj.store(db)
    user = conf.get("broker", "username") or store.setting("broker.collector_username") or "wanwitness-collector"
    password = conf.get("broker", "password") or store.setting("broker.collector_password")
    if not password or new_collector_password:
        password = new_secret()
    store.set_setting("broker.collector_username", user)
    store.set_setting("broker.collector_password", password)
    out = out or conf.path.parent / "mosquitto"
    written = write_mosquitto_config(out, password_hashes(store), (user, hash_password(password)),
                                     prefix=conf.get("broker", "prefix"))
    for path in written:
        click.echo(f"wrote {path}")
    conf_file = next((p for p in written if p.name.endswith(".conf")), None)
    click.echo(f"Include {conf_file} from mosquitto.conf (e.g. copy it to /etc/mosquitto/conf.d/), "
               "restart Mosquitto, then run: wanwitness collect --broker mqtt://HOST:1883")


# --- config -------------------------------------------------------------------------

@cli.group("config")
def config_group() -> None:
    """The collector's config file."""


@config_group.command("path")
@click.pass_obj
def config_path(obj: Ctx) -> None:
    """Print the config file's path."""
    click.echo(str(obj.config_path or cfg.default_config_path()))


@config_group.command("show")
@click.pass_obj
def config_show(obj: Ctx) -> None:
    """Print the effective configuration (file, environment, defaults)."""
    conf = obj.config
    for section, keys in conf.values.items():
        click.echo(f"[{section}]")
        for key, value in keys.items():
            if key == "password" and value:
                value = "********"
            if isinstance(value, tuple):
                value = f"{value[0]}:{value[1]}"
            click.echo(f"{key} = {value!r}")
        click.echo()


@config_group.command("example")
def config_example() -> None:
    """Print a commented config file with every key."""
    click.echo(cfg.example())


# --- helpers ------------------------------------------------------------------------

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


def _checked(check, value, option: str):
    try:
        return check(value)
    except ValueError as e:
        raise UserError(f"{option}: {e}") from None


def _safe_url(url: str) -> str:
    import sqlalchemy as sa
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%Y-%m-%d %H:%M:%S")


def _register_commands() -> None:
    # Command groups that live in their own modules (each a thin wrapper too).
    from .cli_board import register as register_board
    from .cli_claims import register as register_claims
    from .cli_flash import register as register_flash
    register_flash(cli)
    register_board(cli)
    register_claims(cli)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    try:
        cli.main(args=argv, prog_name="wanwitness", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except UserError as e:
        click.echo(f"wanwitness: {e}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(0)
    except Exception as e:  # a bug: one line, the details only when asked for
        if os.environ.get("WANWITNESS_DEBUG"):
            raise
        click.echo(f"wanwitness: internal error: {type(e).__name__}: {e} "
                   "(run with WANWITNESS_DEBUG=1 for details)", err=True)
        sys.exit(1)
    sys.exit(0)


if __name__ == "__main__":
    main()
