"""`wanwitness broker ...`: configuration for an external Mosquitto."""

from __future__ import annotations

from pathlib import Path

import click

from wanwitness.cli.common import Ctx, db_option


@click.group()
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
    from wanwitness.broker.mosquitto import write_mosquitto_config
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
    written = write_mosquitto_config(out, password_hashes(store), (user, hash_password(password)),
                                     prefix=conf.broker.prefix, listen=conf.broker.listen)
    for path in written:
        click.echo(f"wrote {path}")
    conf_file = next((p for p in written if p.name.endswith(".conf")), None)
    click.echo(f"Include {conf_file} from mosquitto.conf (e.g. copy it to /etc/mosquitto/conf.d/), "
               f"restart Mosquitto, then run: wanwitness collect --broker mqtt://HOST:{conf.broker.listen[1]} "
               "(its listener is [broker] listen)")
