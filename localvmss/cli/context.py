"""What every command receives: the API client and the global options of this invocation.

The global options (``-o``, ``--query``, ``--debug``, ``--verbose``, ``--only-show-errors``,
``--socket``, ``--url``, ``--token``) and ``-g`` may come anywhere on the line, so they are
written into one ``Ctx`` as click parses them (``localvmss.cli.azargs``), and the client is made
only when a command first asks for it, from whatever the line said by then.

``output`` is what a command decides on: ``"table"`` (it prints its table and any extra lines)
or ``"json"`` (it hands its data whole to ``emit``). ``format`` is how ``emit`` writes that
data: json, jsonc, yaml, yamlc, tsv or none (``output.py``). Kept apart from ``main`` so command
modules need not import the module that registers them.
"""

from __future__ import annotations

import os

import click

from localvmss.cli import settings
from localvmss.cli.client import DEFAULT_SOCKET, ApiClient


class Ctx:
    """The invocation's client and global options, as the command line gave them."""

    def __init__(self, client: ApiClient | None = None, output: str = "table", debug: bool = False) -> None:
        self._client = client
        self.format = output
        self.debug = debug
        self.verbose = False
        self.only_show_errors = False
        self.query: str | None = None
        self.socket_path: str | None = None
        self.url: str | None = None
        self.token: str | None = None
        self.subscription: str | None = None  # az's --subscription: accepted; one subscription here
        self._group: str | None = None

    @property
    def output(self) -> str:
        """``table`` when the command shows its own table, else ``json`` (data handed whole to
        ``emit``: another format, or a ``--query`` that reshapes the data)."""
        return "table" if self.format == "table" and not self.query else "json"

    @output.setter
    def output(self, value: str) -> None:
        self.format = value

    @property
    def resource_group(self) -> str | None:
        """``-g``, else the configured default group (``config set defaults.group=...``)."""
        return self._group or settings.default_group()

    @resource_group.setter
    def resource_group(self, value: str | None) -> None:
        self._group = value
        if isinstance(self._client, ApiClient):
            self._client.resource_group = self.resource_group

    @property
    def client(self) -> ApiClient:
        if self._client is None:
            self._client = ApiClient(
                self.socket_path or os.environ.get("LOCALVMSS_SOCKET", DEFAULT_SOCKET),
                self.url or os.environ.get("LOCALVMSS_URL"),
                self.token or os.environ.get("LOCALVMSS_TOKEN"),
                resource_group=self.resource_group,
                verbose=self.verbose or self.debug,
            )
        return self._client


pass_ctx = click.make_pass_decorator(Ctx)
