"""Start a child of ``mimir-edge up`` so that it dies with ``up``, even if ``up`` is killed.

``python -m mimir_edge.stack.launch PARENT_PID COMMAND [ARGS...]`` asks Linux to send the
process SIGTERM when its parent goes away (``PR_SET_PDEATHSIG``), checks the parent is still
``PARENT_PID`` (it may have died before the request took effect), and then replaces itself with
``COMMAND`` (same PID; the request survives ``exec``). This is done here rather than in a
``preexec_fn``, which is unsafe in a parent that runs threads (``up`` serves the sink from
one). Linux ties the signal to the parent *thread* that started the child: ``up`` starts
every child from its main thread.
"""

from __future__ import annotations

import os
import sys

from mimir_edge._process import die_with_parent

__all__ = ["main"]


def main(argv: list[str]) -> int:
    if len(argv) < 2 or not argv[0].isdigit():
        print(
            "usage: python -m mimir_edge.stack.launch PARENT_PID COMMAND [ARGS...]", file=sys.stderr
        )
        return 2
    parent, command = int(argv[0]), argv[1:]
    if not die_with_parent(parent):
        return 1  # ``up`` is already gone
    try:
        os.execvp(command[0], command)
    except OSError as e:
        print(f"cannot run {command[0]}: {e.strerror}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
