"""``standby-pool``: a Uniform set's pool of instances kept ready out of its capacity, in the shape
of ``az standby-vm-pool`` (``--max-ready-capacity``, ``--min-ready-capacity``, ``--vm-state``),
plus what localvmss has beyond it: the Paused state, a state distribution and reuse on scale-in.

``localvmss.cli.main`` registers the group; this module does not import ``main``.
"""

from __future__ import annotations

from typing import Any

import click

from localvmss.cli.client import api_path
from localvmss.cli.context import Ctx, pass_ctx
from localvmss.cli.output import STANDBY_COLUMNS, emit
from localvmss.errors import InvalidSpec

STATES = ("Running", "Paused", "Saved")
STATE_HELP = (
    "Running (booted, no traffic), Paused (libvirt suspend: memory kept, no CPU) or Saved (managed save: "
    "memory on disk); Hibernated is accepted for Saved"
)


def parse_distribution(words: tuple[str, ...]) -> dict[str, int] | None:
    """``running=20 paused=50 saved=30`` -> Azure's vmStateDistribution (percent per state)."""
    if not words:
        return None
    out: dict[str, int] = {}
    given = [w for chunk in words for w in chunk.replace(",", " ").split()]
    if not given:
        raise InvalidSpec("--vm-state-distribution is empty: give STATE=PERCENT words, e.g. 'paused=50 saved=50'")
    for word in given:
        state, sep, value = word.partition("=")
        key = state.strip().lower()
        if not sep or key not in ("running", "paused", "saved"):
            raise InvalidSpec(f"--vm-state-distribution {word!r}: give STATE=PERCENT with STATE running, paused, saved")
        if f"{key}Percent" in out:
            raise InvalidSpec(f"--vm-state-distribution names {key} twice")
        try:
            out[f"{key}Percent"] = int(value)
        except ValueError:
            raise InvalidSpec(f"--vm-state-distribution {word!r}: {value!r} is not a whole percentage") from None
    return out


@click.group("standby-pool")
def standby_pool() -> None:
    """A set's standby pool: instances booted and kept ready; a scale-out takes them first."""


def _policy_options(fn: Any) -> Any:
    fn = click.option(
        "--reuse-on-scale-in",
        type=click.BOOL,
        default=None,
        help="a scale-in returns drained instances of the current model to the pool [true|false]",
    )(fn)
    fn = click.option(
        "--dynamic-sizing",
        type=click.BOOL,
        default=None,
        help="the pool holds max-ready-capacity minus the set's capacity, at least min-ready-capacity",
    )(fn)
    fn = click.option(
        "--vm-state-distribution",
        multiple=True,
        help="percent per state, e.g. 'paused=50 saved=50' (instead of --vm-state)",
    )(fn)
    fn = click.option("--vm-state", help=STATE_HELP)(fn)
    fn = click.option("--min-ready-capacity", type=int)(fn)
    return click.option("--max-ready-capacity", type=int)(fn)


@standby_pool.command("create")
@click.argument("name")
@_policy_options
@pass_ctx
def create(c: Ctx, name: str, **options: Any) -> None:
    """Attach a standby pool to the set NAME (or replace its policy whole)."""
    if options["max_ready_capacity"] is None:
        raise InvalidSpec("--max-ready-capacity is required: how many instances the pool holds")
    _put(c, name, _policy({}, **options))


@standby_pool.command("update")
@click.argument("name")
@_policy_options
@pass_ctx
def update(c: Ctx, name: str, **options: Any) -> None:
    """Change the given settings of the set's standby pool; the others stay."""
    current = c.client.get(api_path("scaleSets", name, "standbyPool"))["properties"]["policy"]
    if current is None:
        raise InvalidSpec(f"scale set {name!r} has no standby pool; create one with 'standby-pool create'")
    _put(c, name, _policy(current, **options))


@standby_pool.command("show")
@click.argument("name")
@pass_ctx
def show(c: Ctx, name: str) -> None:
    """The pool's policy, size, instances per state, and (table) its instances."""
    view = c.client.get(api_path("scaleSets", name, "standbyPool"))
    if c.output == "json":
        emit(c, view)
        return
    props = view["properties"]
    states = ", ".join(
        f"{s['state']} {s['standingBy']} standing by" + (f" + {s['preparing']} preparing" if s["preparing"] else "")
        for s in props["instanceCountSummary"]
        if s["standingBy"] or s["preparing"]
    )
    click.echo(f"standby pool of {name}: {props['size']} of {props['targetSize']} ({states or 'empty'})")
    emit(c, view["value"], STANDBY_COLUMNS)


@standby_pool.command("delete")
@click.argument("name")
@pass_ctx
def delete(c: Ctx, name: str) -> None:
    """Detach the pool; its instances are deleted in the background."""
    c.client.delete(api_path("scaleSets", name, "standbyPool"))


def _policy(current: dict[str, Any], **options: Any) -> dict[str, Any]:
    policy = dict(current)
    for key, option in (
        ("maxReadyCapacity", "max_ready_capacity"),
        ("minReadyCapacity", "min_ready_capacity"),
        ("reuseOnScaleIn", "reuse_on_scale_in"),
    ):
        if options[option] is not None:
            policy[key] = options[option]
    if options["dynamic_sizing"] is not None:
        policy["dynamicSizing"] = {"enabled": options["dynamic_sizing"]}
    distribution = parse_distribution(options["vm_state_distribution"])
    if options["vm_state"] is not None and distribution is not None:
        raise InvalidSpec("give --vm-state or --vm-state-distribution, not both")
    if options["vm_state"] is not None:
        policy["virtualMachineState"] = options["vm_state"]
        policy["vmStateDistribution"] = None
    if distribution is not None:
        policy["vmStateDistribution"] = distribution
    return policy


def _put(c: Ctx, name: str, policy: dict[str, Any]) -> None:
    view = c.client.put(api_path("scaleSets", name, "standbyPool"), policy)
    if c.output == "json":
        emit(c, view)
        return
    props = view["properties"]
    click.echo(f"standby pool of {name}: target {props['targetSize']} instance(s), {props['size']} now")
