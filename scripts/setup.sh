#!/usr/bin/env bash
# One-time, idempotent set-up: apt packages, then the project venv (.venv)
# that sees Debian's mininet (system Python) and the PyPI dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "railcc: set-up needs root (it installs apt packages and builds networks): run 'sudo make $*'" >&2
  exit 1
fi

APT_PACKAGES="openvswitch-switch mininet iperf3 tcpdump tshark ethtool iputils-ping iproute2 python3-venv python3-dev gcc libtcmalloc-minimal4"
missing=""
for pkg in $APT_PACKAGES; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing="$missing $pkg"
done
if [ -n "$missing" ]; then
  echo "railcc: installing apt packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq $missing >/dev/null
fi

PY=/usr/bin/python3   # Debian's mininet lives in the system Python
if [ ! -x .venv/bin/python ]; then
  echo "railcc: creating .venv"
  "$PY" -m venv --system-site-packages .venv
fi
# `setup.sh test` adds the test extra (pytest, hypothesis, networkx); the runtime stays lean.
target="."
stamp=.venv/.railcc-installed
if [ "${1:-}" = "test" ]; then
  target=".[test]"
  stamp=.venv/.railcc-installed-test
fi
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "railcc: installing Python dependencies into .venv ($target)"
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e "$target" >/dev/null
  touch "$stamp"
fi
# The compiled NIC datapath (fabric/nic/_engine.c), rebuilt when its source changed.
engine=$(ls fabric/nic/_engine.*.so 2>/dev/null | head -n 1 || true)
if [ -z "$engine" ] || [ fabric/nic/_engine.c -nt "$engine" ] || [ setup.py -nt "$engine" ]; then
  echo "railcc: building the compiled NIC datapath"
  mkdir -p build
  .venv/bin/python setup.py -q build_ext --inplace >/dev/null 2>build/engine-build.log \
    || { cat build/engine-build.log >&2; echo "railcc: building fabric/nic/_engine.c failed" >&2; exit 1; }
fi
# pollgate, preloaded into the run's ovs-vswitchd (fabric/net/pollgate.c), rebuilt likewise.
if [ ! -f fabric/net/pollgate.so ] || [ fabric/net/pollgate.c -nt fabric/net/pollgate.so ]; then
  echo "railcc: building fabric/net/pollgate.so"
  mkdir -p build
  gcc -O2 -Wall -Wextra -shared -fPIC -o fabric/net/pollgate.so fabric/net/pollgate.c -ldl \
    2>build/pollgate-build.log \
    || { cat build/pollgate-build.log >&2; echo "railcc: building fabric/net/pollgate.c failed" >&2; exit 1; }
fi
.venv/bin/python -c "import mininet.net, os_ken, scapy.contrib.roce, fabric.nic._engine" \
  || { echo "railcc: .venv cannot import mininet/os_ken/scapy; remove .venv and retry" >&2; exit 1; }
