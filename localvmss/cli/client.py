"""HTTP client of the daemon's API (unix socket by default, TCP with a token when asked).

Turns error answers back into the project's error kinds so the CLI can print one line and
exit with the kind's code. With a resource group (``-g``, or the configured default) every
request on a scale set or a VM carries ``resourceGroup=NAME``, so the daemon answers only for
what is in that group; ``verbose`` writes each request and its status to stderr.
"""

from __future__ import annotations

import getpass
import os
import sys
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from localvmss import errors

DEFAULT_SOCKET = "/run/localvmss/api.sock"


def api_path(*segments: str | int) -> str:
    """``/a/b/c`` with every segment percent-quoted: a name is one segment, never a path, a
    query or a fragment (unquoted, ``delete 'web#x'`` would act on ``web``). Empty and dot
    segments are refused, since HTTP clients drop or resolve them."""
    parts = []
    for segment in segments:
        text = str(segment)
        if text in ("", ".", ".."):
            raise errors.InvalidSpec(f"{text!r} cannot be used as a name in a request")
        parts.append(quote(text, safe=""))
    return "/" + "/".join(parts)


_BY_CODE: dict[str, type[errors.LocalVMSSError]] = {
    cls.code: cls
    for cls in (
        errors.InvalidSpec,
        errors.NotFound,
        errors.Conflict,
        errors.NotSupported,
        errors.CapacityError,
        errors.HostUnavailable,
        errors.HostBusy,
        errors.StoreError,
        errors.VirtError,
        errors.TemporaryError,
        errors.ResourceGroupNotFound,
    )
}
_BY_CODE["NotFound"] = errors.NotFound  # the code daemons before ResourceNotFound sent

# Paths that name a set or a VM, which the daemon scopes by ?resourceGroup=.
GROUPED_PREFIXES = ("/scaleSets", "/virtualMachines")


def with_group(path: str, group: str | None) -> str:
    """``path`` with ``resourceGroup=group`` added when it names sets or VMs and has none yet."""
    if not group:
        return path
    bare, _, query = path.partition("?")
    if not any(bare == p or bare.startswith(p + "/") for p in GROUPED_PREFIXES):
        return path
    if any(part.split("=", 1)[0] == "resourceGroup" for part in query.split("&") if part):
        return path
    extra = urlencode({"resourceGroup": group})
    return f"{bare}?{query}&{extra}" if query else f"{bare}?{extra}"


class ApiClient:
    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 120.0,
        resource_group: str | None = None,
        verbose: bool = False,
    ) -> None:
        self.resource_group = resource_group
        self.verbose = verbose
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        headers["X-Localvmss-User"] = _login_name()  # who changed what, in the upgrade history
        if url:
            self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout)
            self.where = url
        else:
            transport = httpx.HTTPTransport(uds=socket_path)
            self._http = httpx.Client(
                transport=transport, base_url="http://localvmss", headers=headers, timeout=timeout
            )
            self.where = socket_path

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        path = with_group(path, self.resource_group)
        started = time.monotonic()
        try:
            resp = self._http.request(method, path, json=body, headers=headers)
            if self.verbose:
                ms = (time.monotonic() - started) * 1000
                print(f"{method} {path} -> {resp.status_code} ({ms:.0f} ms)", file=sys.stderr)
        except httpx.TransportError as exc:
            raise errors.DaemonUnreachable(
                f"cannot reach localvmssd at {self.where} ({exc}); is it running? (systemctl status localvmssd)"
            ) from None
        try:
            data = resp.json()
        except ValueError:
            data = None
        if resp.status_code >= 400:
            err = (data or {}).get("error", {}) if isinstance(data, dict) else {}
            message = err.get("message") or f"HTTP {resp.status_code} from {method} {path}"
            cls = _BY_CODE.get(err.get("code", ""), errors.LocalVMSSError)
            raise cls(message)
        return data

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def put(self, path: str, body: Any, headers: dict[str, str] | None = None) -> Any:
        return self.request("PUT", path, body, headers)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body if body is not None else {})

    def patch(self, path: str, body: Any) -> Any:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no passwd entry, no LOGNAME
        return f"uid {os.getuid()}"
