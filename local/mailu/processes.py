"""The stand-in's processes: starting, reloading and stopping its private Postfix and Dovecot masters,
and finding every process that belongs to a work directory (read from /proc, no psutil).

The daemons run as root (as Postfix and Dovecot require for this layout), then drop to their own
unprivileged users. Stopping sends what ``postfix stop`` and ``doveadm stop`` send, minus their
polling delays, and then makes sure nothing of the instance is left.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from local.mailu.config import HOST, Layout, Ports
from local.mailu.install import binary, command_env, which

# Postfix daemons that must be replaced before a changed lookup table is in effect.
_TABLE_READERS = frozenset({"smtpd", "trivial-rewrite", "cleanup", "virtual", "proxymap"})
Process = tuple[int, int]  # (pid, start time): a pid alone may be reused


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_busy(port: int) -> bool:
    """Whether something else holds ``port`` on 127.0.0.1 (a listener or a connection)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((HOST, port))
        except OSError:
            return True
        return False


def listening(ports: Iterable[int]) -> set[int]:
    """Which of ``ports`` have a TCP socket listening on 127.0.0.1 (or any address)."""
    wanted = set(ports)
    found: set[int] = set()
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return found
    for line in lines:
        fields = line.split()
        if len(fields) < 4 or fields[3] != "0A":  # 0A = LISTEN
            continue
        address, port_hex = fields[1].split(":")
        port = int(port_hex, 16)
        if port in wanted and address in ("0100007F", "00000000"):
            found.add(port)
    return found


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# --------------------------------------------------------------------------- /proc


def _read_pid(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    first = text.split()[0] if text else ""
    return int(first) if first.isdigit() else None


def _proc_stat(pid: int) -> tuple[str, str, int, int, int] | None:
    """(comm, state, ppid, pgrp, starttime) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    open_paren, close_paren = raw.find("("), raw.rfind(")")
    comm = raw[open_paren + 1 : close_paren]
    fields = raw[close_paren + 2 :].split()
    return comm, fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[1] not in ("Z", "X")


def _all_pids() -> list[int]:
    return [int(entry) for entry in os.listdir("/proc") if entry.isdigit()]


def _descendants(root: int) -> set[Process]:
    """(pid, starttime) of every live descendant of ``root`` (not root itself)."""
    children: dict[int, list[Process]] = {}
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[1] not in ("Z", "X"):
            children.setdefault(stat[2], []).append((pid, stat[4]))
    found: set[Process] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child[0])
    return found


def _same_process_alive(pid: int, starttime: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[4] == starttime and stat[1] not in ("Z", "X")


def _start_time(pid: int) -> int:
    stat = _proc_stat(pid)
    return stat[4] if stat is not None else -1


def _is_mail_daemon(pid: int) -> bool:
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return False
    base = os.path.basename(exe.removesuffix(" (deleted)"))
    return "/postfix/" in exe or "/dovecot/" in exe or base in ("postfix", "dovecot", "master")


def find_processes(workdir: Path) -> list[int]:
    """Postfix/Dovecot processes that belong to a stand-in in ``workdir``.

    A process belongs to it when it is a Postfix or Dovecot program and its command line,
    working directory or ``MAIL_CONFIG`` environment variable mention the work directory.
    (Postfix daemons run in their queue directory with ``MAIL_CONFIG`` set; Dovecot's
    master has ``-c FILE`` on its command line and its children run in its base_dir.)
    """
    root = str(Path(workdir).resolve())
    needle = root.encode()
    me = os.getpid()
    found: list[int] = []
    for pid in _all_pids():
        if pid == me or not _is_mail_daemon(pid):
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            environ = b""
        in_env = any(item.startswith(b"MAIL_CONFIG=") and needle in item for item in environ.split(b"\0"))
        if needle in cmdline or cwd == root or cwd.startswith(root + "/") or in_env:
            found.append(pid)
    return found


def signal_stop(master: int | None) -> set[Process]:
    """SIGTERM a master (Postfix's or Dovecot's); return it and its descendants to wait for.

    This is what ``postfix stop`` and ``doveadm stop`` send, minus their polling delays:
    Postfix's master terminates its process group, Dovecot's its children.
    """
    if master is None:
        return set()
    processes = _descendants(master) | {(master, _start_time(master))}
    with contextlib.suppress(ProcessLookupError):
        os.kill(master, signal.SIGTERM)
    return processes


def wait_gone(processes: set[Process], timeout: float) -> None:
    """Wait for ``processes`` to exit; SIGKILL whatever is left after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(_same_process_alive(pid, start) for pid, start in processes):
            return
        time.sleep(0.02)
    for pid, start in processes:
        if _same_process_alive(pid, start):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def run(argv: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """A Postfix/Dovecot tool, its output captured."""
    return subprocess.run(
        argv, capture_output=True, stdin=subprocess.DEVNULL, text=True, env=command_env(), timeout=timeout, check=False
    )


# --------------------------------------------------------------------------- the two masters


class Daemons:
    """One stand-in's Postfix and Dovecot masters, configured by the files under its `Layout`."""

    def __init__(self, layout: Layout, ports: Ports, logs: Callable[[int], str]) -> None:
        self.layout = layout
        self.ports = ports
        self._logs = logs  # the last n lines of the daemons' logs, for error messages

    # -- both ----------------------------------------------------------------------------------
    def start(self) -> None:
        # Postfix first: `postfix start` creates its queue directories, and Dovecot puts its
        # auth socket for Postfix into the queue's private/ directory.
        if not self.postfix_alive():
            self.start_postfix()
        if not self.dovecot_alive():
            try:
                self.start_dovecot()
            except BaseException:
                self.stop_postfix()
                raise

    def stop(self) -> None:
        """Stop both masters and make sure no process of this instance is left. Idempotent."""
        # Signal both masters first, then wait: Dovecot's master takes about a second to exit.
        processes = signal_stop(self.postfix_master_pid()) | signal_stop(self.dovecot_master_pid())
        wait_gone(processes, timeout=10.0)
        self.kill_leftovers()

    def running(self) -> bool:
        return self.postfix_alive() and self.dovecot_alive()

    def kill_leftovers(self) -> None:
        """SIGKILL any Postfix/Dovecot process still tied to this work dir (normally none)."""
        if not self.layout.workdir.exists():
            return
        for _ in range(3):
            pids = find_processes(self.layout.workdir)
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)

    # -- postfix -------------------------------------------------------------------------------
    def postfix_master_pid(self) -> int | None:
        pid = _read_pid(self.layout.postfix_queue_dir / "pid" / "master.pid")
        if pid is None or not _alive(pid):
            return None
        stat = _proc_stat(pid)
        return pid if stat is not None and stat[0] == "master" else None

    def postfix_alive(self) -> bool:
        return self.postfix_master_pid() is not None

    def postfix(self, *args: str) -> list[str]:
        """argv of the ``postfix`` command for this instance."""
        return [binary("postfix"), "-c", str(self.layout.postfix_config_dir), *args]

    def start_postfix(self) -> None:
        # `postfix start` runs its integrity checks first (they also create the queue
        # directories): about 0.4 s, once main.cf is not "just modified" (see atomic_write).
        rc, output = self._run_starter(self.postfix("start"), "postfix-start")
        ports = [self.ports.submission, self.ports.smtps]
        if rc == 0 and wait_until(lambda: listening(ports) == set(ports) and self.postfix_alive()):
            return
        detail = self._postfix_check_output()
        self.stop_postfix()
        raise RuntimeError(
            f"postfix failed to start (rc={rc}) for {self.layout.workdir}\n"
            f"--- postfix start output ---\n{output}\n"
            f"--- postfix check ---\n{detail}\n--- logs ---\n{self._logs(40)}"
        )

    def stop_postfix(self) -> None:
        wait_gone(signal_stop(self.postfix_master_pid()), timeout=10.0)

    def reload_postfix(self) -> None:
        """``postfix reload`` and wait until no daemon holding the old tables can take a session."""
        master = self.postfix_master_pid()
        if master is None:
            return
        old = {(pid, start) for pid, start in _descendants(master) if (_proc_stat(pid) or ("",))[0] in _TABLE_READERS}
        # What `postfix reload` sends. Idle daemons then exit at once (a daemon busy with a
        # session finishes it first); any daemon the master starts from now on reads the new
        # tables, so once the old ones are gone every new session sees the change.
        os.kill(master, signal.SIGHUP)
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if not any(_same_process_alive(pid, start) for pid, start in old):
                break
            time.sleep(0.01)

    def _postfix_check_output(self) -> str:
        command = shlex.join(self.postfix("check"))
        script = which("script")
        if script is None:
            result = run(["sh", "-c", command], timeout=60)
        else:
            # Postfix prints its errors only to a terminal (or syslog): give it one.
            result = run([script, "-qc", command, "/dev/null"], timeout=60)
        return (result.stdout + result.stderr).strip()

    # -- dovecot -------------------------------------------------------------------------------
    def dovecot_master_pid(self) -> int | None:
        pid = _read_pid(self.layout.dovecot_base_dir / "master.pid")
        if pid is None or not _alive(pid):
            return None
        stat = _proc_stat(pid)
        return pid if stat is not None and stat[0] == "dovecot" else None

    def dovecot_alive(self) -> bool:
        return self.dovecot_master_pid() is not None

    def start_dovecot(self) -> None:
        rc, output = self._run_starter([binary("dovecot"), "-c", str(self.layout.dovecot_config)], "dovecot-start")
        # Dovecot opens its listeners before it daemonizes and writes master.pid: wait for all.
        ports = [self.ports.imap, self.ports.imaps]
        ok = rc == 0 and wait_until(
            lambda: listening(ports) == set(ports) and self.layout.auth_socket.exists() and self.dovecot_alive()
        )
        if not ok:
            self.stop_dovecot()
            raise RuntimeError(
                f"dovecot failed to start (rc={rc}) for {self.layout.workdir}\n{output}\n--- logs ---\n{self._logs(40)}"
            )

    def stop_dovecot(self) -> None:
        wait_gone(signal_stop(self.dovecot_master_pid()), timeout=10.0)

    # -- helpers -------------------------------------------------------------------------------
    def _run_starter(self, argv: list[str], name: str) -> tuple[int, str]:
        """Run a command that leaves a daemon behind, with its output in a file, not a pipe.

        (A daemon that inherits a pipe keeps it open, and reading it would never end.)
        """
        out_path = self.layout.log_dir / f"{name}.out"
        with open(out_path, "w+") as out:
            result = subprocess.run(
                argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=command_env(),
                timeout=60,
                check=False,
            )
            out.seek(0)
            return result.returncode, out.read()
