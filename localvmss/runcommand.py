"""Run-command over SSH (paramiko) with the daemon's own key, like Azure's run-command.

The daemon keeps one ed25519 key in its state directory and puts its public half into every
instance's NoCloud seed (as Azure's agent gives the platform a way in), so run-command needs no
key from the user.

paramiko (with invoke, PyNaCl and bcrypt, ~14 MiB of RSS) is imported on the first run-command,
not when the daemon starts: an idle daemon never uses it. The public half is read from the key
file's header (``sshkeys.openssh_public_key``), and a new key is made by a short-lived child
process (``python -m localvmss.runcommand --new-key PATH``): cryptography's library, once
loaded, would stay in the daemon's RSS (~10 MiB) for good.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from localvmss.errors import InvalidSpec, LocalVMSSError, TemporaryError
from localvmss.pychild import run_module, why_failed
from localvmss.sshkeys import openssh_public_key

if TYPE_CHECKING:
    import paramiko

MAX_SCRIPT_BYTES = 65536
KEY_COMMENT = "localvmssd"


class ManagementKey:
    """The daemon's ed25519 key: ``public`` (an authorized_keys line) at once, ``private`` (a
    paramiko key) on first use."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "ssh" / "id_ed25519"
        if not self.path.exists():
            self._generate()
        self.public = openssh_public_key(self.path.read_text(), KEY_COMMENT)
        self._private: paramiko.PKey | None = None

    @property
    def private(self) -> paramiko.PKey:
        if self._private is None:
            import paramiko

            self._private = paramiko.Ed25519Key.from_private_key_file(str(self.path))
        return self._private

    def _generate(self) -> None:
        """A new key, made in a child process (see the module's docstring)."""
        done = run_module("localvmss.runcommand", ["--new-key", str(self.path)], timeout_s=60)
        if done.returncode != 0 or not self.path.exists():
            raise LocalVMSSError(f"cannot make the management SSH key {self.path}: {why_failed(done)}")


def write_new_key(path: Path) -> None:
    """Write a new ed25519 key to ``path`` (OpenSSH format, mode 0600, atomically)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    os.replace(tmp, path)


def run_script(ip: str, key: paramiko.PKey, script: str, port: int = 22, timeout_s: float = 60.0) -> dict[str, object]:
    """Run ``script`` as root in the guest; returns stdout, stderr and the exit code."""
    if not isinstance(script, str) or not script.strip():
        raise InvalidSpec("script must be a non-empty string")
    if len(script.encode()) > MAX_SCRIPT_BYTES:
        raise InvalidSpec(f"script is longer than {MAX_SCRIPT_BYTES} bytes")
    import paramiko

    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.AutoAddPolicy())  # fresh guests have fresh host keys
    try:
        client.connect(
            ip,
            port=port,
            username="root",
            pkey=key,
            timeout=10,
            banner_timeout=10,
            auth_timeout=10,
            look_for_keys=False,
            allow_agent=False,
        )
        # The script goes to the guest's shell on stdin, never through a local shell.
        stdin, stdout, stderr = client.exec_command("sh -s", timeout=timeout_s)
        stdin.write(script)
        stdin.channel.shutdown_write()
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        code = stdout.channel.recv_exit_status()
    except (paramiko.SSHException, OSError) as exc:
        raise TemporaryError(f"run-command on {ip}: SSH failed: {exc}") from None
    finally:
        client.close()
    return {"stdout": out, "stderr": err, "exitCode": code}


if __name__ == "__main__":  # the daemon's child that makes a new key (ManagementKey._generate)
    if len(sys.argv) != 3 or sys.argv[1] != "--new-key":
        sys.exit("usage: python -m localvmss.runcommand --new-key PATH")
    write_new_key(Path(sys.argv[2]))
