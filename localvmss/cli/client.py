"""HTTP client of the daemon's API (unix socket by default, TCP with a token when asked).

Turns error answers back into the project's error kinds so the CLI can print one line and
exit with the kind's code.
"""

from __future__ import annotations

import getpass
import os
from typing import Any
from urllib.parse import quote

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
        errors.VirtError,
        errors.TemporaryError,
    )
}


class ApiClient:
    def __init__(
        self,
        socket_path: str = DEFAULT_SOCKET,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 120.0,
    ) -> None:
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
        try:
            resp = self._http.request(method, path, json=body, headers=headers)
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
