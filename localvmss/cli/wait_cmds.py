"""``vmss wait``: block until a condition on a scale set (or one instance) holds, as az's generic
wait command does: ``--created``, ``--updated`` (provisioningState Succeeded), ``--deleted``,
``--exists``, or ``--custom JMESPATH`` (truthy on the resource), polled every ``--interval``
seconds up to ``--timeout``. Progress goes to stderr; nothing is printed on stdout.

``localvmss.cli.main`` registers this command; this module does not import ``main``.
"""

from __future__ import annotations

import click

from localvmss.cli.azflags import instance_id_option
from localvmss.cli.client import api_path
from localvmss.cli.context import Ctx, pass_ctx
from localvmss.cli.formats import compile_query
from localvmss.cli.waiting import wait_until
from localvmss.errors import InvalidSpec


@click.command("wait")
@click.argument("name")
@instance_id_option(required=False, help="wait on this instance instead of the set")
@click.option("--created", is_flag=True, help="until it exists with provisioningState Succeeded")
@click.option("--updated", is_flag=True, help="until provisioningState is Succeeded")
@click.option("--deleted", is_flag=True, help="until it no longer exists")
@click.option("--exists", is_flag=True, help="until it exists")
@click.option("--custom", metavar="JMESPATH", help="until this query on the resource is truthy")
@click.option("--interval", type=click.FloatRange(min=0.1), default=30.0, show_default=True, help="seconds")
@click.option("--timeout", type=click.FloatRange(min=0), default=3600.0, show_default=True, help="seconds")
@pass_ctx
def wait(
    c: Ctx,
    name: str,
    instance_id: str | None,
    created: bool,
    updated: bool,
    deleted: bool,
    exists: bool,
    custom: str | None,
    interval: float,
    timeout: float,
) -> None:
    """Wait until the set (or an instance) is created, updated, deleted, exists or --custom holds."""
    flags = {"created": created, "updated": updated, "deleted": deleted, "exists": exists, "custom": custom is not None}
    chosen = [condition for condition, given in flags.items() if given]
    if len(chosen) != 1:
        raise InvalidSpec("give one of --created, --updated, --deleted, --exists or --custom JMESPATH")
    if custom is not None:
        compile_query(custom)
    path = (
        api_path("scaleSets", name, "virtualMachines", instance_id)
        if instance_id is not None
        else api_path("scaleSets", name)
    )
    label = f"{name} instance {instance_id}" if instance_id is not None else name
    wait_until(c, label, path, chosen[0], custom, interval, timeout)
