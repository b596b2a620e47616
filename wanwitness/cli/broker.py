"""`wanwitness broker ...`: configuration for an external Mosquitto."""

from __future__ import annotations

from pathlib import Path

import click

from wanwitness.cli.common import Ctx, db_option
from wanwitness.config import Config


@click.group()
def broker() -> None:
    """External broker (Mosquitto) set-up."""


@broker.command("mosquitto-config")
@db_option
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Directory for passwd, acl and wanwitness.conf (default: next to the config file).")
@click.option("--new-collector-password", is_flag=True, help="Replace the collector's broker password.")
@click.option("--collectors", type=click.IntRange(1, 64), default=1, show_default=True,
              help="How many collectors (collect --shared): users NAME, NAME-2 .. NAME-N with "
                   "the collector's password, one for each (a client id is bound to its user).")
@click.pass_obj
def broker_mosquitto_config(obj: Ctx, db: str | None, out: Path | None,
                            new_collector_password: bool, collectors: int) -> None:
    """Write a Mosquitto password file and ACL for every agent and the collector."""
    from wanwitness.broker.mosquitto import collector_usernames, write_mosquitto_config
    from wanwitness.broker.passwords import hash_password, new_secret
    from wanwitness.collector.agents import password_hashes
    conf = obj.config
    store = obj.store(db)
    user = conf.broker.username or store.setting("broker.collector_username") or "wanwitness-collector"
    password = conf.broker.password or store.setting("broker.collector_password")
    if not password or new_collector_password:
        password = new_secret()
    store.set_setting("broker.collector_username", user)
    store.set_setting("broker.collector_password", password)
    out = out or conf.path.parent / "mosquitto"
    tls_files = _mosquitto_tls(conf)
    written = write_mosquitto_config(out, password_hashes(store), (user, hash_password(password)),
                                     prefix=conf.broker.prefix, listen=conf.broker.listen,
                                     max_packet=conf.broker.max_packet,
                                     max_connections=conf.broker.max_connections,
                                     tls_files=tls_files,
                                     tls_listen=conf.broker.tls_listen or ("", 8883),
                                     collectors=collectors)
    for path in written:
        click.echo(f"wrote {path}")
    conf_file = next((p for p in written if p.name.endswith(".conf")), None)
    click.echo(f"Include {conf_file} from mosquitto.conf (e.g. copy it to /etc/mosquitto/conf.d/), "
               f"restart Mosquitto, then run: wanwitness collect --broker mqtt://HOST:{conf.broker.listen[1]} "
               "(its listener is [broker] listen)")
    if collectors > 1:
        names = collector_usernames(user, collectors)
        click.echo(f"{collectors} collectors, one broker user each: {', '.join(names)} (the same "
                   "password). Start each with its own, e.g. "
                   f"`WANWITNESS_BROKER_USERNAME={names[1]} wanwitness collect --shared GROUP "
                   "--db postgresql://...` (or [broker] username in its config file).")
    if tls_files is not None:
        port = (conf.broker.tls_listen or ("", 8883))[1]
        click.echo(f"It also serves MQTT over TLS on port {port} with {tls_files[1]}: Mosquitto "
                   f"reads {tls_files[2]} as user mosquitto (e.g. copy the files to "
                   "/etc/mosquitto/certs/, `chown mosquitto:` the key and set [broker] tls_cert, "
                   "tls_key, tls_ca to the copies). Boards made by `wanwitness agent add` use it.")


def _mosquitto_tls(conf: Config) -> tuple[Path, Path, Path] | None:
    """(CA, certificate, key) for the snippet's TLS listener, None without TLS."""
    from wanwitness.broker.tls import configured_ca, configured_server
    from wanwitness.errors import UserError
    if conf.broker.tls_listen is None:
        return None
    server = configured_server(conf.broker, conf.path)
    if server is None:
        return None
    ca = configured_ca(conf.broker, conf.path)
    if ca is None:
        raise UserError(f"the broker's certificate is {server[0]}, but no CA certificate is "
                        "known: set [broker] tls_ca")
    return ca, server[0], server[1]


@broker.group("tls")
def broker_tls() -> None:
    """MQTT over TLS: a local CA and the broker's certificate."""


@broker_tls.command("init")
@click.option("--host", "hosts", multiple=True, metavar="NAME|IP",
              help="Another name or address the boards use to reach the broker (the LAN "
                   "address, a DNS name). Repeatable. This machine's names, localhost, "
                   "127.0.0.1 and ::1 are always included.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path),
              help="Where to write the files (default: tls/ beside the config file).")
@click.option("--force", is_flag=True, help="Replace existing files: a new server certificate, "
              "the CA kept (boards need no change).")
@click.option("--new-ca", is_flag=True, help="With --force: a new CA too (every board then needs "
              "its config.json again).")
@click.pass_obj
def broker_tls_init(obj: Ctx, hosts: tuple[str, ...], directory: Path | None, force: bool,
                    new_ca: bool) -> None:
    """Create a CA and a server certificate for MQTT over TLS (port 8883)."""
    from wanwitness.broker.tls import check_host, default_directory, init_tls, san_names
    from wanwitness.errors import UserError
    if new_ca and not force:
        raise UserError("--new-ca replaces files: give --force with it")
    for host in hosts:
        check_host(host)  # a bad --host is named before anything is written
    default_dir = default_directory(obj.config.path)
    files, kept_ca = init_tls(directory or default_dir, hosts, force=force, new_ca=new_ca)
    if kept_ca:
        click.echo(f"kept  {files.ca_cert} (the CA: boards that have it trust the new certificate)")
    else:
        click.echo(f"wrote {files.ca_cert} (the CA: every board's config.json gets it)")
        click.echo(f"      {files.ca_key} (the CA's key, mode 0600: keep it private)")
    click.echo(f"wrote {files.cert} (the broker's certificate for "
               f"{', '.join(san_names(files.cert))})")
    click.echo(f"      {files.key} (mode 0600)")
    click.echo("Next:")
    if files.directory != default_dir.absolute():
        click.echo(f"  - in {obj.config.path}, [broker]: tls_cert = \"{files.cert}\", "
                   f"tls_key = \"{files.key}\", tls_ca = \"{files.ca_cert}\"")
    click.echo("  - embedded broker: restart `wanwitness collect`; it serves MQTT over TLS on "
               "[broker] tls_listen (0.0.0.0:8883). Once every board uses TLS, set [broker] "
               "listen = \"127.0.0.1:1883\" so nothing plain is reachable from the network.")
    click.echo("  - Mosquitto: run `wanwitness broker mosquitto-config` again; its snippet then "
               "has a TLS listener with these files.")
    click.echo("  - boards: `wanwitness agent add NAME` now writes broker.tls, port 8883 and the "
               "CA into config.json; see docs/agent.md for boards set up before.")
