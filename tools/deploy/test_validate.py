#!/usr/bin/env python3
"""Proof that check_deploy.py catches broken deployment files: each case copies
tools/deploy to a scratch tree, breaks one thing, and expects a check to fail there that
does not fail on the unbroken copy. Then proof that unit_sandbox.py, which the checks run
nodes in, refuses what the unit forbids. Run by validate.sh (in its venv) after the checks.

  test_validate.py --binary PATH
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parents[1]

# (what is broken, file under tools/deploy, text, replacement, a check that must now fail)
CASES = [
    ("readiness probe on /health", "kubernetes/statefulset.yaml",
     "path: /ready", "path: /health", "readinessProbe GET /ready"),
    ("not-ready pods left out of the seed DNS", "kubernetes/service-peers.yaml",
     "publishNotReadyAddresses: true", "publishNotReadyAddresses: false",
     "one headless Service"),
    ("a misspelt field", "kubernetes/statefulset.yaml",
     "terminationGracePeriodSeconds: 30", "terminationGracePeriodSecond: 30",
     "kubernetes-validate --strict"),
    ("$(POD_NAME) used before it is defined", "kubernetes/statefulset.yaml",
     ("            - name: POD_NAME\n              valueFrom:\n                fieldRef:\n"
      "                  fieldPath: metadata.name\n"), "",
     "env GOSSIP_ADVERTISE: $(...) refers to earlier variables"),
    ("gossip port of the Service differs from the node's", "kubernetes/service-peers.yaml",
     "port: 7100", "port: 7101", "Service gossip-roster-peers port gossip"),
    ("image exposes another port", "Dockerfile", "EXPOSE 7100 7180", "EXPOSE 7100 7181",
     "EXPOSE is the gossip and http ports"),
    ("image runs as root", "Dockerfile", "USER ${GOSSIP_UID}:${GOSSIP_GID}", "USER 0:0",
     "runs as a fixed non-root uid:gid"),
    ("a key systemd does not know", "systemd/gossip-node.service",
     "Type=exec", "Type=exec\nRestartSecs=5s", "systemd-analyze verify"),
    ("W^X protection dropped", "systemd/gossip-node.service",
     "MemoryDenyWriteExecute=yes", "MemoryDenyWriteExecute=no", "hardening settings"),
    ("stop timeout shorter than a leave", "systemd/gossip-node.service",
     "TimeoutStopSec=30s", "TimeoutStopSec=2s", "TimeoutStopSec leaves time"),
    ("an env name that is no flag", "systemd/gossip-node.env",
     "GOSSIP_CLUSTER=production", "GOSSIP_CLUSTER_NAME=production",
     "GOSSIP_CLUSTER_NAME is a flag of the binary"),
]


# What unit_sandbox.py must refuse inside gossip-node.service's limits (Python snippets run
# in the sandbox; each prints the errno it got).
REFUSED = [
    ("a netlink socket (RestrictAddressFamilies)",
     ("import socket\ntry: socket.socket(socket.AF_NETLINK, socket.SOCK_RAW)\n"
      "except OSError as e: print(e.errno)"), "97"),
    ("a writable and executable mapping (MemoryDenyWriteExecute)",
     ("import mmap\ntry: mmap.mmap(-1, 4096, prot=mmap.PROT_READ|mmap.PROT_WRITE|mmap.PROT_EXEC)"
      "\nexcept OSError as e: print(e.errno)"), "1"),
    ("ptrace, outside @system-service (SystemCallFilter)",
     ("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
      "print(ctypes.get_errno() if libc.ptrace(0, 0, 0, 0) == -1 else 'allowed')"), "1"),
]


def check_sandbox() -> tuple[int, int]:
    """unit_sandbox.py enforces: a snippet refused inside runs outside."""
    passed = failed = 0
    unit = DEPLOY / "systemd/gossip-node.service"
    for what, code, want in REFUSED:
        inside = subprocess.run(["/usr/bin/python3", str(DEPLOY / "unit_sandbox.py"),
                                 "--user", "10001:10001", str(unit), "--",
                                 "/usr/bin/python3", "-c", code],
                                capture_output=True, text=True, check=False)
        outside = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True,
                                 text=True, check=False)
        got = inside.stdout.strip()
        ok = got == want and outside.stdout.strip() != want
        print(f"{'PASS' if ok else 'FAIL'}  the sandbox refuses {what}"
              + ("" if ok else f" (inside: {got or inside.stderr.strip()[-200:]!r}, "
                 f"outside: {outside.stdout.strip()!r})"))
        passed, failed = passed + ok, failed + (not ok)
    return passed, failed


def failures(tree: Path, binary: Path) -> tuple[int, set[str]]:
    out = subprocess.run([sys.executable, str(tree / "tools/deploy/check_deploy.py"),
                          "--binary", str(binary), "--no-run"],
                         capture_output=True, text=True, check=False)
    failed = {m.group(1) for m in re.finditer(r"^FAIL  (.*)$", out.stdout, re.MULTILINE)}
    return out.returncode, failed


def scratch_tree(parent: Path, name: str) -> Path:
    tree = parent / name
    shutil.copytree(DEPLOY, tree / "tools/deploy",
                    ignore=shutil.ignore_patterns("__pycache__", "cluster-secret"))
    shutil.copy(ROOT / ".dockerignore", tree / ".dockerignore")
    return tree


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", type=Path, required=True)
    binary = ap.parse_args().binary.resolve()
    passed = failed = 0
    with tempfile.TemporaryDirectory(prefix="gossip-deploy-test-") as tmp:
        _, baseline = failures(scratch_tree(Path(tmp), "baseline"), binary)
        for i, (what, rel, old, new, expect) in enumerate(CASES):
            tree = scratch_tree(Path(tmp), f"case{i}")
            path = tree / "tools/deploy" / rel
            text = path.read_text()
            if old not in text:
                print(f"FAIL  {what}: {rel} no longer contains {old!r}; update the case")
                failed += 1
                continue
            path.write_text(text.replace(old, new, 1))
            code, fails = failures(tree, binary)
            caught = [f for f in fails - baseline if f.startswith(expect)]
            ok = code != 0 and bool(caught)
            print(f"{'PASS' if ok else 'FAIL'}  caught: {what}"
                  + ("" if ok else f" (new failures: {sorted(fails - baseline)})"))
            passed, failed = passed + ok, failed + (not ok)
    p, f = check_sandbox()
    passed, failed = passed + p, failed + f
    print(f"\n{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
