"""What every command receives: the API client and the global options (``--output``, ``--debug``).

The root group in ``localvmss.cli.main`` makes the ``Ctx``; command modules take it with
``@pass_ctx``. Kept apart from ``main`` so that command modules (``autoscale_cmds``) need not
import the module that registers them.
"""

from __future__ import annotations

import click

from localvmss.cli.client import ApiClient


class Ctx:
    """The invocation's client and global options, as the root group parsed them."""

    def __init__(self, client: ApiClient, output: str, debug: bool) -> None:
        self.client = client
        self.output = output
        self.debug = debug


pass_ctx = click.make_pass_decorator(Ctx)
