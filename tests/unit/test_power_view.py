"""What an instance view says while a guest shuts down, and which actions take skipShutdown."""

from __future__ import annotations

import pytest

from localvmss.errors import InvalidSpec, NotFound
from localvmss.model import PowerState
from localvmss.service import _check_action_options, _shown_power
from localvmss.store import InstanceRow


def _inst(desired: str) -> InstanceRow:
    return InstanceRow("web", 0, "h1", 0, 0, "m", "i", 1, desired, "Succeeded", 0.0)


@pytest.mark.parametrize(
    ("desired", "actual", "shown"),
    [
        ("stopped", PowerState.RUNNING, PowerState.STOPPING),
        ("deallocated", PowerState.RUNNING, PowerState.DEALLOCATING),
        ("stopped", PowerState.STOPPED, PowerState.STOPPED),
        ("deallocated", PowerState.DEALLOCATED, PowerState.DEALLOCATED),
        ("running", PowerState.RUNNING, PowerState.RUNNING),
        ("running", PowerState.STOPPED, PowerState.STOPPED),  # starting: shown as it is
        ("stopped", PowerState.UNKNOWN, PowerState.UNKNOWN),
    ],
)
def test_shown_power_has_azures_transitional_states(desired: str, actual: PowerState, shown: PowerState) -> None:
    assert _shown_power(_inst(desired), actual) is shown


@pytest.mark.parametrize("action", ["start", "deallocate", "restart", "reimage", "delete"])
def test_skip_shutdown_belongs_to_power_off_only(action: str) -> None:
    _check_action_options(action, skip_shutdown=False)
    with pytest.raises(InvalidSpec, match="skipShutdown applies only to powerOff"):
        _check_action_options(action, skip_shutdown=True)
    _check_action_options("powerOff", skip_shutdown=True)


def test_unknown_action_is_refused() -> None:
    """The one action table answers, as the API does for an unknown path: not found, with the list."""
    with pytest.raises(NotFound, match="no action 'explode'; actions are start, powerOff"):
        _check_action_options("explode", skip_shutdown=False)
