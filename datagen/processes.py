"""Child processes that cannot outlive the process that started them.

The CLI starts the embedded model server, the pipeline runner starts one process per stage
and the service one per job. If the parent is killed (even with SIGKILL), its children must
not keep running and paying for requests nobody will read. On Linux the kernel does this for
us (``PR_SET_PDEATHSIG``); elsewhere the children rely on their own parent checks.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen`` that has Linux SIGKILL the child when this
    process dies; None on other systems."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def hook() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before the hook ran
            os._exit(137)

    return hook
