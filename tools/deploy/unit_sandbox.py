#!/usr/bin/env python3
"""The seccomp part of a systemd unit's sandbox, read from the unit file and enforced on a
command without systemd: SystemCallFilter= (with SystemCallErrorNumber=),
RestrictAddressFamilies=, MemoryDenyWriteExecute= and NoNewPrivileges=, after dropping to
an unprivileged uid:gid (User=, an empty CapabilityBoundingSet=). validate.sh runs nodes
under it to show that the binary works inside the unit's limits, on machines where systemd
is not the init.

  unit_sandbox.py --user UID:GID UNIT -- COMMAND [ARG...]

Needs root (to change uid) and libseccomp's Python bindings (Debian: python3-seccomp).
Like systemd, each restriction is a filter of its own; the kernel applies the strictest.
"""

from __future__ import annotations

import argparse
import errno
import os
import re
import socket
import subprocess
import sys
from pathlib import Path


def parse_unit(path: Path) -> dict[str, list[str]]:
    """Section.Key -> values in order (systemd allows a key more than once)."""
    out: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


def syscall_groups() -> dict[str, list[str]]:
    """systemd's syscall groups (`systemd-analyze syscall-filter`), members unexpanded."""
    out = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True,
                         text=True, check=True).stdout
    groups: dict[str, list[str]] = {}
    current = None
    for line in out.splitlines():
        if line.startswith("@"):
            current = line.strip()
            groups[current] = []
        elif current and line.strip() and not line.strip().startswith("#"):
            groups[current].append(line.strip())
    return groups


def expand(groups: dict[str, list[str]], name: str) -> set[str]:
    out: set[str] = set()
    for item in groups.get(name, []):
        out |= expand(groups, item) if item.startswith("@") else {item}
    return out


def allowed_syscalls(unit: dict[str, list[str]]) -> set[str]:
    """The allow list SystemCallFilter= lines build, in order (`~` removes)."""
    groups = syscall_groups()
    allowed: set[str] = set()
    for value in unit.get("Service.SystemCallFilter", []):
        deny = value.startswith("~")
        names: set[str] = set()
        for item in value.lstrip("~").split():
            names |= expand(groups, item) if item.startswith("@") else {item}
        allowed = allowed - names if deny else allowed | names
    return allowed


def last(unit: dict[str, list[str]], key: str) -> str | None:
    values = unit.get(f"Service.{key}")
    return values[-1] if values else None


def install_filters(unit: dict[str, list[str]], allowed: set[str]) -> None:
    import seccomp  # only here: the checks import this module without the bindings

    # RestrictAddressFamilies=: socket(2) with another family fails with EAFNOSUPPORT.
    families = last(unit, "RestrictAddressFamilies")
    if families:
        permitted = sorted(getattr(socket, name) for name in families.split())
        f = seccomp.SyscallFilter(seccomp.ALLOW)
        refuse = seccomp.ERRNO(errno.EAFNOSUPPORT)
        for family in range(permitted[-1]):
            if family not in permitted:
                f.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.EQ, family))
        f.add_rule(refuse, "socket", seccomp.Arg(0, seccomp.GT, permitted[-1]))
        f.load()

    # MemoryDenyWriteExecute=: no mapping both writable and executable, no making memory
    # executable afterwards (what systemd's filter refuses, with EPERM).
    if last(unit, "MemoryDenyWriteExecute") == "yes":
        f = seccomp.SyscallFilter(seccomp.ALLOW)
        deny = seccomp.ERRNO(errno.EPERM)
        wx = 0x2 | 0x4  # PROT_WRITE | PROT_EXEC
        f.add_rule(deny, "mmap", seccomp.Arg(2, seccomp.MASKED_EQ, wx, wx))
        f.add_rule(deny, "mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
        f.add_rule(deny, "pkey_mprotect", seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
        f.add_rule(deny, "shmat", seccomp.Arg(2, seccomp.MASKED_EQ, 0o100000, 0o100000))
        f.load()

    # SystemCallFilter=, last: its allow list need not hold seccomp() itself. Everything
    # else fails with SystemCallErrorNumber= (or is killed).
    if allowed:
        err = last(unit, "SystemCallErrorNumber")
        default = seccomp.ERRNO(getattr(errno, err)) if err else seccomp.KILL_PROCESS
        f = seccomp.SyscallFilter(default)
        for name in sorted(allowed):
            try:
                f.add_rule(seccomp.ALLOW, name)
            except (RuntimeError, ValueError):
                pass  # not a system call of this architecture
        f.load()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("unit", type=Path)
    ap.add_argument("--user", required=True, help="UID:GID to run as")
    ap.add_argument("command", nargs=argparse.REMAINDER)
    opts = ap.parse_args()
    command = opts.command[1:] if opts.command[:1] == ["--"] else opts.command
    if not command:
        ap.error("no command")
    m = re.fullmatch(r"(\d+):(\d+)", opts.user)
    if not m:
        ap.error(f"--user must be UID:GID, not {opts.user!r}")
    unit = parse_unit(opts.unit)
    allowed = allowed_syscalls(unit)
    uid, gid = int(m.group(1)), int(m.group(2))
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)  # a non-root uid keeps no capabilities: CapabilityBoundingSet= (empty)
    install_filters(unit, allowed)  # libseccomp sets no_new_privs first (NoNewPrivileges=)
    os.execvp(command[0], command)
    return 127


if __name__ == "__main__":
    sys.exit(main())
