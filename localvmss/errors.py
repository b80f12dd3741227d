"""The project's error kinds.

Every layer raises one of these; the API maps ``http_status`` onto responses and the CLI maps
``exit_code`` onto its process exit status. Messages are one line that says what and why.
"""

from __future__ import annotations


class LocalVMSSError(Exception):
    """Base of every error localvmss reports to a person."""

    http_status = 500
    exit_code = 1
    code = "InternalError"

    def __init__(self, message: str, *, target: str | None = None, details: list[LocalVMSSError] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.target = target  # ARM's error target: the field or resource the error is about
        self.details = details or []

    def to_json(self) -> dict[str, dict[str, object]]:
        """Azure's error body: ``{"error": {"code", "message", "target", "details"}}``."""
        return {"error": self.error_body()}

    def error_body(self) -> dict[str, object]:
        body: dict[str, object] = {"code": self.code, "message": self.message}
        if self.target is not None:
            body["target"] = self.target
        body["details"] = [d.error_body() for d in self.details]
        return body


class InvalidSpec(LocalVMSSError):
    """Bad input: a name, a capacity, a rule, a JSON body. Nothing was changed."""

    http_status = 400
    exit_code = 2
    code = "InvalidParameter"


class NotFound(LocalVMSSError):
    http_status = 404
    exit_code = 3
    code = "ResourceNotFound"


class ResourceGroupNotFound(NotFound):
    code = "ResourceGroupNotFound"


class SubscriptionNotFound(NotFound):
    code = "SubscriptionNotFound"


class InvalidApiVersion(LocalVMSSError):
    """An ARM request without an api-version, or with one this resource type does not have."""

    http_status = 400
    exit_code = 2
    code = "InvalidApiVersionParameter"


class Conflict(LocalVMSSError):
    """The request contradicts existing state (duplicate name, immutable field, set not empty)."""

    http_status = 409
    exit_code = 4
    code = "Conflict"


class NotSupported(LocalVMSSError):
    """The operation does not exist in this mode (e.g. autoscale in VM orchestration mode)."""

    http_status = 400
    exit_code = 5
    code = "OperationNotAllowed"


class CapacityError(LocalVMSSError):
    """The hosts cannot hold what was asked for."""

    http_status = 409
    exit_code = 6
    code = "InsufficientCapacity"


class HostUnavailable(LocalVMSSError):
    """A libvirt host did not answer."""

    http_status = 503
    exit_code = 7
    code = "HostUnavailable"


class VirtError(LocalVMSSError):
    """libvirt failed; the message keeps libvirt's own error text and code."""

    http_status = 500
    exit_code = 8
    code = "VirtualizationError"

    def __init__(self, message: str, libvirt_code: int | None = None) -> None:
        super().__init__(message)
        self.libvirt_code = libvirt_code


class HostBusy(LocalVMSSError):
    """A host answered but refused for now (a pool job running, a domain in transition): busy is
    not down, so the caller skips or retries the step and never treats the host as lost."""

    http_status = 503
    exit_code = 7
    code = "HostBusy"


class StoreError(LocalVMSSError):
    """The state database cannot be read or written (corrupt, full, read-only)."""

    http_status = 503
    exit_code = 11
    code = "StateStoreUnavailable"


class DaemonUnreachable(LocalVMSSError):
    exit_code = 9
    code = "DaemonUnreachable"


class TemporaryError(LocalVMSSError):
    """Retry later (with backoff); the reconciler keeps going."""

    http_status = 503
    exit_code = 10
    code = "TemporaryError"


class GuestAgentUnavailable(LocalVMSSError):
    """Nobody answers on a guest's command channel (no channel, not running, no answer in time)."""

    http_status = 503
    exit_code = 12
    code = "GuestAgentUnavailable"


class GuestAgentError(LocalVMSSError):
    """The guest's command service answered, but refused or said something unexpected."""

    http_status = 500
    exit_code = 12
    code = "GuestAgentError"


class WarmCloneUnavailable(LocalVMSSError):
    """A saved template cannot become this instance; start it with a cold boot instead."""

    http_status = 409
    exit_code = 13
    code = "WarmCloneUnavailable"
