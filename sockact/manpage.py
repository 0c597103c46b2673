"""The man page, docs/sockact.1, written from the argument parsers: every command, its options and their help.

Regenerate it from a checkout with `python3 -m sockact.manpage > docs/sockact.1`; tests/unit/test_manpage.py
fails when the committed page differs from what this writes, so a new option cannot miss the page.
The prose around the generated parts (what each command does in more words, the environment, exit
status, examples) is kept here as roff.
"""

from __future__ import annotations

import argparse
import sys

from . import __version__

DESCRIPTION = """\
.B sockact
runs an ASGI or WSGI application as several worker processes that share one
listening socket, with
.BR systemd (1)
as the supervisor.
There is no daemon of its own: systemd owns the socket, starts and restarts
the workers, and keeps their logs.
.PP
For an app called
.IR NAME ,
sockact writes three units:
.TP
.IB NAME .socket
owns the listening port
.RB ( Accept=no ).
It stays open while workers start, crash or restart, so clients wait in the
kernel backlog instead of being refused.
The first connection starts
.IB NAME @1.service\\fR.
.TP
.IB NAME @.service
the template of one worker.
Every instance inherits the same socket, tells systemd
.B READY=1
once the app has started, sends watchdog pings from its serving loop
(on by default with
.BR \\-\\-app ),
stops them while every thread is stuck in one request past
.BR \\-\\-request\\-timeout ,
and drains in\\-flight requests on
.BR SIGTERM .
Unless told otherwise, workers run as a dynamic user in a sandbox on a
read\\-only system.
.TP
.IB NAME .target
wants the instances
.IB NAME @1.service
to
.IB NAME @ N .service
and so decides how many workers run.
.PP
Every command prints a summary of its options with
.BR \\-\\-help .
"""

# More than the one-line help, for the commands that need it; a command without an entry gets its help alone.
DETAILS: dict[str, str] = {
    "install": """\\
Check the app, write the units into the unit directory and reload systemd; with
.B \\-\\-now
start the socket and every worker and wait until each is ready
.RB ( READY=1 ),
with
.B \\-\\-enable
start the socket on every boot.
Before anything is written, install checks that the interpreter (followed
through every symlink) is executable and not hidden from the workers by
.BR ProtectHome= ,
that
.B \\-\\-chdir
is a directory and
.B \\-\\-env\\-file
a readable file, that each TCP port is free (else it names the process
holding it), and that the app imports as a worker imports it: same
interpreter, directory, environment, user and sandbox, run through
.BR systemd\\-run .
A failed check is one line and exit status 1, and nothing is written.
If the app does not become ready under
.BR \\-\\-now ,
install prints the app's own reason in one line and exits 1: a fresh
install is removed again (stopped, units removed, nothing enabled), an
upgrade gets its previous units back.
.B \\-\\-dry\\-run
runs the checks alone and prints what would be written; it needs no root
(without root the import is checked as a plain subprocess).
Takes the unit options below, and
.BI \\-\\-unit\\-dir " DIR"
(default:
.B $SOCKACT_UNIT_DIR
or
.BR /etc/systemd/system ).
Needs root.
""",
    "generate": """\\
Print the three units for review, print one of them with
.BR \\-\\-only " socket\\fR|\\fPservice\\fR|\\fPtarget" ,
or write all of them (or none) into a directory with
.BI \\-\\-output\\-dir " DIR"\\fR.
.B \\-\\-explain
prints what each sandbox line of the service does and what lifting it
costs.
.BI \\-\\-systemd\\-version " N"
renders for that systemd major version instead of the running one.
Takes the unit options below.
""",
    "uninstall": """\\
Stop the app (its workers drain first), disable it and remove its units.
Takes
.BR \\-\\-unit\\-dir .
Needs root.
""",
    "list": """\\
The apps sockact installed, with their state and worker counts; one JSON
document with
.BR \\-\\-json .
Takes
.BR \\-\\-unit\\-dir .
""",
    "status": """\\
The socket, its backlog and one row per worker: state, PID, memory, CPU and
requests served.
.B \\-\\-watch
.RI [ SECONDS ]
refreshes it until interrupted;
.B \\-\\-json
prints one JSON document.
""",
    "scale": """\\
.B sockact scale
.I NAME
.IR N | auto
sets the number of workers while they run, and keeps it across restarts.
Needs root.
""",
    "reload": """\\
A rolling restart for new code: one worker at a time, each ready before the
next is restarted, so no request is dropped.
Needs root.
""",
    "start": """\\
Clears the failed state a crash loop leaves on the socket and the workers,
starts the socket and every worker, and waits until each worker is ready;
if one does not start, prints its journal and exits non-zero.
Needs root.
""",
    "stop": """\\
Stops every worker (each drains its requests in flight) and the socket;
the port closes.
Needs root.
""",
    "logs": """\\
The journal of every worker merged, each line tagged with its worker.
.BR \\-f ", " \\-\\-follow
keeps printing new lines;
.BR \\-n ", " \\-\\-lines " \\fIN\\fP"
prints the last
.I N
lines;
.BI \\-\\-worker " K"
shows only
.IB NAME @ K .service\\fR;
.BR \\-p ", " \\-\\-priority " \\fILEVEL\\fP"
shows only that priority or more urgent;
.BI \\-\\-since " TIME"
starts at that time, as
.BR journalctl (1)
reads it;
.B \\-\\-json
prints the journal's records as they are.
""",
    "exec": """\\
.B sockact exec
.I NAME
.B \\-\\-
.IR CMD ...
runs a one\\-off command (a database migration, an admin account, static
files, a shell) once, through
.BR systemd\\-run (1),
as the workers run: the same user (the same dynamic user), environment,
working directory, state, cache and logs directories, sandbox and limits,
taken from
.IB NAME @.service
and its drop\\-ins.
A bare command name is looked up in the workers' PATH, the directory of
their interpreter first.
On a terminal the command gets one; otherwise standard input and output
pass through.
Exits with the command's status.
Needs root.
""",
    "run": """\\
The worker runtime: what
.B ExecStart=
of the generated service runs, as
.IB PYTHON " \\-m sockact run " MODULE : ATTR\\fR.
It serves the application on the sockets systemd passes, or on
.BI \\-\\-bind " ADDR"
when started by hand.
.B \\-\\-stop\\-timeout
sets how long in\\-flight requests may take after
.BR SIGTERM ;
.BR \\-\\-interface " auto\\fR|\\fPasgi3\\fR|\\fPasgi2\\fR|\\fPwsgi"
overrides the detected protocol of the app;
.BI \\-\\-threads " N"
sizes the thread pool of a WSGI app;
.B \\-\\-access\\-log
logs every request;
.B \\-\\-log\\-level
sets the lowest level logged.
""",
    "demo": """\\
Start a bundled example app under systemd with
.BI \\-\\-workers " N"
workers, send
.BI \\-\\-requests " N"
requests, show which worker answered each, and remove the units again.
Needs root.
""",
}

# Each command's name, one-line help and parser.
Commands = dict[str, tuple[str, argparse.ArgumentParser]]

# After the generated sections: what no parser knows.
TAIL = """\
.SH ENVIRONMENT
.TP
.B SOCKACT_UNIT_DIR
the unit directory of
.BR install ,
.B uninstall
and
.B list
when
.B \\-\\-unit\\-dir
is not given.
.TP
.BR LISTEN_FDS ", " LISTEN_PID ", " LISTEN_FDNAMES
set by systemd for each worker; the runtime adopts the passed sockets and
removes these variables so that child processes do not adopt them too.
.TP
.BR NOTIFY_SOCKET ", " WATCHDOG_USEC
set by systemd; where the runtime sends
.BR READY=1 ,
.B STATUS=
and watchdog pings.
.TP
.BR SOCKACT_APP ", " SOCKACT_WORKER
set in the generated service to the app name and the instance number
.RB ( %i );
they name the worker in its log records.
.SH FILES
.TP
.B /etc/systemd/system/
where
.B install
writes units unless told otherwise.
.SH EXIT STATUS
.TP
.B 0
success.
.TP
.B 1
an operation failed; the message says why.
.TP
.B 2
a mistake in the command line or in a value given to it.
.TP
.B 3
the worker runtime cannot serve: no socket was passed and no
.B \\-\\-bind
given, or the app cannot be loaded.
.SH EXAMPLES
Install an app, start it on every boot and now, and look at it:
.PP
.nf
.RS
sudo sockact install myapp \\-\\-app myproj.asgi:application \\e
    \\-\\-listen 8000 \\-\\-chdir /srv/myproj \\-\\-enable \\-\\-now
sockact status myapp
sockact logs myapp \\-f
.RE
.fi
.PP
Deploy new code without dropping a request, then use four workers:
.PP
.nf
.RS
sudo sockact reload myapp
sudo sockact scale myapp 4
.RE
.fi
.PP
An app whose dependencies live in a virtual environment: give the
environment's interpreter with
.BR \\-\\-python .
That interpreter must import sockact too: install sockact into the
environment, or create the environment with
.B \\-\\-system\\-site\\-packages
so that it sees the packaged one.
The workers must be able to read the environment, so keep it outside
.BR /root .
.PP
.nf
.RS
python3 \\-m venv \\-\\-system\\-site\\-packages /srv/myproj/venv
/srv/myproj/venv/bin/pip install \\-r /srv/myproj/requirements.txt
sudo sockact install myapp \\-\\-app myproj.asgi:application \\e
    \\-\\-listen 8000 \\-\\-chdir /srv/myproj \\e
    \\-\\-python /srv/myproj/venv/bin/python \\-\\-enable \\-\\-now
.RE
.fi
.PP
Review units before writing them by hand:
.PP
.nf
.RS
sockact generate myapp \\-\\-app myproj.asgi:application \\-\\-listen 8000
.RE
.fi
.SH SEE ALSO
.BR systemctl (1),
.BR journalctl (1),
.BR systemd.socket (5),
.BR systemd.service (5),
.BR systemd.exec (5),
.BR systemd.target (5),
.BR sd_notify (3),
.BR sd_listen_fds (3)
"""


def escape(text: str) -> str:
    """Plain text as roff: backslashes and hyphens escaped, and no line may start like a request."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.splitlines())


def sentence(text: str) -> str:
    """A help string as the page's entries read: as written, ending with a full stop."""
    text = text.strip()
    return escape(text if text.endswith(".") else text + ".")


def lowercase_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def help_text(action: argparse.Action, prog: str) -> str:
    text = action.help or ""
    if "%" in text:
        text = text % {**vars(action), "prog": prog}
    if not text and action.default not in (None, False, argparse.SUPPRESS):
        text = f"default: {action.default}"
    return text


def metavar(action: argparse.Action) -> str:
    if action.metavar is not None:
        return str(action.metavar)
    if action.choices is not None:
        return "|".join(str(choice) for choice in action.choices)
    return action.dest.upper()


def option_tag(action: argparse.Action) -> str:
    """The .TP tag of one argument: its flags in bold, its value in italics."""
    if not action.option_strings:
        return f"\\fI{escape(metavar(action))}\\fR"
    flags = ", ".join(f"\\fB{escape(flag)}\\fR" for flag in action.option_strings)
    if action.nargs == 0:
        return flags
    value = f"\\fI{escape(metavar(action))}\\fR"
    return f"{flags} [{value}]" if action.nargs == "?" else f"{flags} {value}"


def documented(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every argument but --help, which the OPTIONS section covers once for all commands."""
    return [a for a in parser._actions if not isinstance(a, argparse._HelpAction) and a.help != argparse.SUPPRESS]


def options_list(parser: argparse.ArgumentParser, skip: set[str], prog: str) -> list[str]:
    """.TP entries of every argument not in skip, group by group, each group with its description."""
    out: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a in documented(parser) and key(a) not in skip]
        if not actions:
            continue
        if group.title not in ("positional arguments", "options", "optional arguments"):
            out += [".PP", f"\\fI{escape(str(group.title))}\\fR: {sentence(group.description or '')}"]
        for action in actions:
            out += [".TP", option_tag(action)]
            text = help_text(action, prog)
            if text:
                out.append(sentence(text))
    return out


def key(action: argparse.Action) -> str:
    """What makes two commands' arguments the same: their flags (or name) and their help."""
    return f"{action.option_strings or action.dest} {action.help}"


def synopsis(name: str, parser: argparse.ArgumentParser) -> list[str]:
    """One line per command: its positionals, its required options, and [OPTIONS] for the rest."""
    words = [f"\\fBsockact {escape(name)}\\fR"]
    required_groups = [g for g in parser._mutually_exclusive_groups if g.required]
    in_groups = {a for g in required_groups for a in g._group_actions}
    optional = False
    for action in documented(parser):
        if action in in_groups:
            continue
        if not action.option_strings:
            words.append(f"\\fI{escape(metavar(action))}\\fR")
        elif action.required:
            words.append(option_tag(action))
        else:
            optional = True
    for group in required_groups:
        words.append("(" + " | ".join(option_tag(a) for a in group._group_actions) + ")")
    if optional:
        words.append("[\\fIOPTIONS\\fR]")
    return [" ".join(words), ".br"]


def subcommands(parser: argparse.ArgumentParser) -> Commands:
    """Each command's name, one-line help and parser, in the order `sockact --help` lists them."""
    from .runtime.main import build_parser as runtime_parser

    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: str(choice.help) for choice in sub._choices_actions}
    # `sockact run` hands its arguments to the runtime, whose parser holds the real options.
    return {
        name: (helps[name], runtime_parser() if name == "run" else command) for name, command in sub.choices.items()
    }


def shared_options(commands: Commands) -> set[str]:
    """The options install and generate share (the unit options): listed once, after the commands."""
    if "install" not in commands or "generate" not in commands:
        return set()
    return {key(a) for a in documented(commands["install"][1])} & {key(a) for a in documented(commands["generate"][1])}


def head(parser: argparse.ArgumentParser, commands: Commands) -> list[str]:
    name = lowercase_first(escape(str(parser.description or "").rstrip(".")))
    out = [
        f'.TH SOCKACT 1 "" "sockact {__version__}" "User Commands"',
        ".SH NAME",
        f"sockact \\- {name}",
        ".SH SYNOPSIS",
    ]
    for command_name, (_, command) in commands.items():
        out += synopsis(command_name, command)
    return [
        *out,
        "\\fBsockact\\fR [\\fB\\-\\-version\\fR | \\fB\\-\\-help\\fR]",
        ".SH DESCRIPTION",
        DESCRIPTION.rstrip("\n"),
    ]


def command_sections(commands: Commands, shared: set[str]) -> list[str]:
    out = [".SH COMMANDS"]
    for name, (one_line, command) in commands.items():
        out += [f".SS {escape(name)}", DETAILS[name].rstrip("\n") if name in DETAILS else sentence(one_line)]
        entries = options_list(command, shared if name in ("install", "generate") else set(), f"sockact {name}")
        if entries:
            out += [".PP", "Arguments:", *entries]
        if command.epilog:
            out += [".PP", ".nf", ".RS", escape(command.epilog.rstrip("\n")), ".RE", ".fi"]
    return out


def unit_options(commands: Commands, shared: set[str]) -> list[str]:
    if not shared:
        return []
    install = commands["install"][1]
    only_install = {key(a) for a in documented(install)} - shared
    return [
        ".SH UNIT OPTIONS",
        "For",
        ".B install",
        "and",
        ".BR generate .",
        *options_list(install, only_install, "sockact install"),
    ]


def render(parser: argparse.ArgumentParser) -> str:
    """The whole page, roff, for parser (sockact.cli.build_parser())."""
    commands = subcommands(parser)
    shared = shared_options(commands)
    out = [
        *head(parser, commands),
        *command_sections(commands, shared),
        *unit_options(commands, shared),
        ".SH OPTIONS",
        ".TP",
        ".B \\-\\-version",
        "print the version and exit.",
        ".TP",
        '.BR \\-h ", " \\-\\-help',
        "print a summary of the command line, of sockact or of one command, and exit.",
        TAIL.rstrip("\n"),
    ]
    return "\n".join(out) + "\n"


def main() -> int:
    from .cli import build_parser

    sys.stdout.write(render(build_parser()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
