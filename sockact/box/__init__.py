"""The private systemd ("the box"): a throwaway systemd booted in new namespaces, for running real units in tests.

``PrivateSystemd`` starts ``/lib/systemd/systemd`` as PID 1 of fresh PID, mount, UTS, IPC, network
and cgroup namespaces, with its own /run, /tmp, /var/tmp, /dev, /sys and journal, so units can be
installed, started and load-tested without touching the machine's own systemd, kernel settings or
files. ``sockact demo`` runs in one; the pytest fixtures around it live in ``sockact.testing``.

Needs root with CAP_SYS_ADMIN, util-linux ``unshare``/``nsenter``, a cgroup2 mount and systemd
installed (it need not be running). ``unavailable_reason()`` says why a machine cannot do it.

Modules: ``host`` (what the machine must offer, HarnessError), ``lifecycle`` (launching and destroying
a box: launch.sh, boot.sh, the units it masks), ``systemd`` (PrivateSystemd, what a test does with a box).
"""

from __future__ import annotations

from .host import HarnessError, unavailable_reason
from .systemd import PrivateSystemd

__all__ = ["HarnessError", "PrivateSystemd", "unavailable_reason"]
