"""The one exception tree of sockact; only ``cli.main`` turns these into exit codes."""

from __future__ import annotations


class SockactError(Exception):
    """Base of every error sockact reports to a person.

    The message is one line that says what is wrong and how to fix it.
    """

    exit_code = 1


class UsageError(SockactError):
    """Bad input from the user: a name, an address, a value. Exit status 2."""

    exit_code = 2


class SystemdError(SockactError):
    """systemd could not be reached or refused an operation."""


class NotOursError(SockactError):
    """A unit exists but sockact did not write it, so sockact will not touch it."""


class PermissionNeeded(SockactError):
    """The operation needs root; the message says to use sudo."""


class RuntimeFailure(SockactError):
    """The worker runtime cannot serve (no sockets, app does not load)."""

    exit_code = 3


class PreflightFailed(SockactError):
    """A check before install found what would stop the workers; nothing was written."""


class StartFailed(SockactError):
    """install --now started the app and it did not become ready; the message is the app's own reason."""
