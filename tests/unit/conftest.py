"""Fixtures every unit test module may use: the reconciler over recording fake hosts (``env``)."""

from tests.unit.test_reconciler import env  # noqa: F401 (registers the fixture)
