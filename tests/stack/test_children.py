"""The children of ``mimir-edge up``: an exited child's process group is swept while the
child still holds the group's ID, never after it was reaped (the ID may then be reused by an
unrelated group)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mimir_edge.stack.children import Child, stop_all


def _unreaped(pid: int) -> bool:
    """Whether ``pid`` is still our (exited or running) child, not reaped yet."""
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return False
    return True


def _child(tmp_path: Path, code: str, name: str = "c") -> Child:
    c = Child(name, [sys.executable, "-c", code], tmp_path / f"{name}.log")
    c.start()
    return c


def test_poll_reports_an_exit_without_reaping(tmp_path: Path) -> None:
    c = _child(tmp_path, "raise SystemExit(3)")
    try:
        assert c.wait_exit(30)
        assert c.poll() == 3
        assert c.exit_description() == "exited with code 3"
        assert _unreaped(c.pid)  # the zombie keeps the group ID taken
    finally:
        stop_all([c], 0.0)
    assert not _unreaped(c.pid)
    assert c.poll() == 3


def test_a_killed_child_reports_the_signal(tmp_path: Path) -> None:
    c = _child(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    try:
        assert c.wait_exit(30)
        assert c.short_status() == "c (SIGKILL)"
    finally:
        stop_all([c], 0.0)


def test_groups_are_killed_only_before_reaping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    swept: list[tuple[int, bool]] = []
    real_killpg = os.killpg

    def killpg(pgid: int, sig: int) -> None:
        swept.append((pgid, _unreaped(pgid)))
        real_killpg(pgid, sig)

    monkeypatch.setattr(os, "killpg", killpg)
    exited = _child(tmp_path, "pass", "exited")
    running = _child(tmp_path, "import time; time.sleep(60)", "running")
    assert exited.wait_exit(30)
    assert stop_all([exited, running], 10.0) == []
    stop_all([exited, running], 0.0)  # again (as ``up``'s last resort does): nothing to kill
    exited.kill_group()
    assert {pgid for pgid, _ in swept} == {exited.pid, running.pid}
    assert all(unreaped for _, unreaped in swept), swept
    assert not _unreaped(exited.pid)
    assert not _unreaped(running.pid)


def test_the_sweep_kills_what_an_exited_child_left_behind(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    code = (
        "import subprocess, sys; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid))"
    )
    c = _child(tmp_path, code)
    assert c.wait_exit(30)
    grandchild = int(pid_file.read_text())
    stop_all([c], 0.0)
    # Re-parented to init (or a subreaper), it is gone or a zombie once killed.
    deadline = time.monotonic() + 30
    while _state(grandchild) not in ("gone", "Z"):
        assert time.monotonic() < deadline, f"grandchild {grandchild} still running"
        time.sleep(0.01)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "gone"


def test_die_with_parent_asks_for_sigterm_and_checks_the_parent() -> None:
    code = (
        "import ctypes, os, signal; from mimir_edge._process import die_with_parent; "
        "ok = die_with_parent(os.getppid()); wrong = die_with_parent(os.getppid() + 1); "
        "sig = ctypes.c_int(); ctypes.CDLL(None).prctl(2, ctypes.byref(sig)); "  # PR_GET_PDEATHSIG
        "print(ok, wrong, sig.value == signal.SIGTERM)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "True"], out.stderr


def test_launch_does_not_start_the_command_once_its_parent_is_gone(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    launch = [sys.executable, "-m", "mimir_edge.stack.launch"]
    gone = subprocess.run([*launch, "0", "touch", str(marker)], timeout=60, check=False)
    assert gone.returncode == 1
    assert not marker.exists()
    here = subprocess.run([*launch, str(os.getpid()), "touch", str(marker)], timeout=60)
    assert here.returncode == 0
    assert marker.exists()
