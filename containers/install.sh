#!/usr/bin/env bash
# The one installer both Apptainer definitions run in %post (hpml-cpu.def: cpu, hpml.def: gpu),
# so that what `make container-check` really builds and trains with on the CPU image is what the
# GPU image runs. Pins are read from setup.py (the single source of truth), never restated here.
#
#   bash /opt/hpml/src/containers/install.sh cpu|gpu    # in %post: install everything
#   bash containers/install.sh --apt-packages cpu|gpu   # what apt is asked for (tests read this)
#   bash containers/install.sh --requirements cpu|gpu   # the pins the image installs (hpml[train]), as setup.py computes them
#   bash containers/install.sh --horovod-env cpu|gpu    # the Horovod build flags
#   bash containers/install.sh --clean-copy SRC DEST    # copy the source without checkout debris
#
# A builder may provide a cache folder at /var/cache/hpml (make container-check binds one):
# apt archives, pip's cache and the Horovod wheel are then kept there between builds. If it is a
# plain folder inside the image it is deleted at the end, so no cache ends up in the image.
set -euo pipefail

SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${HPML_PYTHON:-python3.11}
VENV=/opt/venv
CACHE=/var/cache/hpml

die() {
  echo "install.sh: error: $*" >&2
  exit 1
}
step() { echo "install.sh: [${SECONDS}s] $*"; }

# setup.py's HPML_TENSORFLOW: the GPU image has CUDA 12.2 + cuDNN 8.9 from its base, so it takes
# the GPU build of TensorFlow without NVIDIA's pip copies of the same libraries ("system-cuda").
tf_variant() {
  case $1 in
    cpu) echo cpu ;;
    gpu) echo system-cuda ;;
    *) die "flavor must be 'cpu' or 'gpu', not '$1'" ;;
  esac
}

# Everything apt is asked for, in install order. Never a package the CUDA base image holds
# (libnccl2, libnccl-dev, libcublas-*, libcudnn8): they are installed already, and asking apt for
# them again stops the build ("Held packages were changed"). tests/unit/test_containers.py checks this.
apt_packages() {
  ppa_packages "$1"
  main_packages "$1"
}

# Ubuntu 22.04 (the CUDA base) has no final Python 3.11; the deadsnakes PPA provides it.
ppa_packages() {
  tf_variant "$1" >/dev/null
  if [ "$1" = gpu ]; then echo software-properties-common gnupg; fi
}

# Python 3.11; Open MPI 4.1 built against the distribution's PMIx (srun --mpi=pmix starts the
# ranks); compilers + cmake for Horovod; rdma-core user space, so that NCCL and Open MPI can reach
# the InfiniBand devices the host passes in through /dev.
main_packages() {
  tf_variant "$1" >/dev/null
  echo python3.11 python3.11-venv python3.11-dev build-essential cmake ca-certificates \
    openmpi-bin libopenmpi-dev libpmix-dev libibverbs1 ibverbs-providers ibverbs-utils
}

horovod_env() {
  tf_variant "$1" >/dev/null
  echo HOROVOD_WITH_TENSORFLOW=1 HOROVOD_WITH_MPI=1 HOROVOD_WITH_GLOO=1
  echo HOROVOD_WITHOUT_PYTORCH=1 HOROVOD_WITHOUT_MXNET=1
  if [ "$1" = gpu ]; then
    # NCCL for GPU collectives, linked against the base image's libnccl.so.2 (one NCCL for TF and
    # Horovod); CUDA kernels for A100 (8.0) and H100 (9.0) only, Snellius's GPUs.
    echo HOROVOD_GPU=CUDA HOROVOD_GPU_OPERATIONS=NCCL HOROVOD_NCCL_LINK=SHARED
    echo HOROVOD_CUDA_HOME=/usr/local/cuda HOROVOD_BUILD_CUDA_CC_LIST=80,90
  fi
}

# install_requires + the train extra (what `pip install hpml[train]` installs) exactly as setup.py
# computes them for this flavor (setuptools stubbed out, so this works with a bare Python before
# anything is installed).
requirements() {
  local variant
  variant=$(tf_variant "$1")
  HPML_TENSORFLOW=$variant "$PY" - "$SRC/setup.py" <<'EOF'
import runpy, sys, types
captured = {}
shim = types.ModuleType("setuptools")  # setup.py runs without setuptools: only its arguments matter
shim.setup = lambda **kwargs: captured.update(kwargs)
shim.find_packages = lambda **kwargs: []  # the package list does not matter here
command, build_py = types.ModuleType('setuptools.command'), types.ModuleType('setuptools.command.build_py')
build_py.build_py = type('build_py', (), {})
shim.command, command.build_py = command, build_py
sys.modules.update({'setuptools': shim, 'setuptools.command': command, 'setuptools.command.build_py': build_py})
runpy.run_path(sys.argv[1])
print("\n".join(captured["install_requires"] + captured["extras_require"]["train"]))
EOF
}

# The package is installed from a copy without the checkout's debris, whatever %files brought in.
clean_copy() {
  local src=$1 dest=$2
  mkdir -p "$dest"
  tar -C "$src" --anchored --exclude=./.venv --exclude=./.git --exclude=./runs --exclude=./demo-out \
    --exclude=./build --no-anchored --exclude='*.egg-info' --exclude=__pycache__ --exclude='*.pyc' \
    --exclude=.pytest_cache --exclude=.ruff_cache -cf - . | tar -C "$dest" -xf -
}

pick() {  # pick NAME REQUIREMENT...: the requirement for package NAME
  local name=$1 req
  shift
  for req; do
    if [[ $req =~ ^$name(\[[^]]*\])?[=\<\>!~] ]]; then
      echo "$req"
      return
    fi
  done
  die "setup.py has no requirement for $name"
}

install_apt() {
  local flavor=$1 held pkg
  export DEBIAN_FRONTEND=noninteractive
  local apt=(apt-get -y -q --no-install-recommends)
  if [ -d "$CACHE" ]; then
    mkdir -p "$CACHE/apt/archives/partial"
    apt+=(-o "Dir::Cache::archives=$CACHE/apt/archives/")
  fi
  held=$(apt-mark showhold)
  for pkg in $(apt_packages "$flavor"); do
    if grep -qx "$pkg" <<<"$held"; then
      die "the base image holds $pkg (apt-mark hold): it is installed already; do not ask apt for it"
    fi
  done
  step "apt: $(apt_packages "$flavor" | xargs)"
  apt-get update -q
  if [ -n "$(ppa_packages "$flavor")" ]; then
    # shellcheck disable=SC2046
    "${apt[@]}" install $(ppa_packages "$flavor")
    add-apt-repository -y ppa:deadsnakes/ppa
    apt-get update -q
  fi
  # shellcheck disable=SC2046
  "${apt[@]}" install $(main_packages "$flavor")
}

install_all() {
  local flavor=$1 variant tmp wheels key
  variant=$(tf_variant "$flavor")
  install_apt "$flavor"

  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_PROGRESS_BAR=off
  # pip trusts the image's CA store (Mozilla's set, plus any site CA a builder behind a
  # TLS-inspecting proxy added), not only its own bundled copy.
  export PIP_CERT=/etc/ssl/certs/ca-certificates.crt
  if [ -d "$CACHE" ]; then export PIP_CACHE_DIR=$CACHE/pip; else export PIP_NO_CACHE_DIR=1; fi
  step "virtualenv $VENV with $("$PY" --version)"
  "$PY" -m venv "$VENV"
  local pip=("$VENV/bin/python" -m pip)
  # Build tools for Horovod and hpml (no build isolation: Horovod must see TensorFlow); the
  # same range as the Makefile's.
  "${pip[@]}" install -q "setuptools>=69,<76" wheel

  local listed tf numpy hvd
  listed=$(requirements "$flavor")
  mapfile -t reqs <<<"$listed"
  tf=$(pick 'tensorflow(-cpu)?' "${reqs[@]}")
  numpy=$(pick numpy "${reqs[@]}")
  hvd=$(pick horovod "${reqs[@]}")
  step "pip: $tf $numpy"
  "${pip[@]}" install -q "$tf" "$numpy"

  # Horovod compiles against this TensorFlow, this MPI, this OS: a cached wheel is reused only
  # when all of them (and the build flags) match.
  # shellcheck disable=SC1091
  key=$(printf '%s\n' "$hvd" "$tf" "$(. /etc/os-release && echo "$ID-$VERSION_ID")" \
    "$("$PY" -c 'import sys; print(sys.version_info[:2])')" "$(horovod_env "$flavor")" |
    sha256sum | cut -c1-16)
  tmp=$(mktemp -d)
  wheels=$tmp/wheels
  if [ -d "$CACHE" ]; then wheels=$CACHE/wheels/$key; fi
  if ls "$wheels"/horovod-*.whl >/dev/null 2>&1; then
    step "using the cached Horovod wheel $wheels"
  else
    step "building $hvd against $tf (minutes)"
    mkdir -p "$wheels"
    local flags
    mapfile -t flags < <(horovod_env "$flavor" | tr ' ' '\n')
    env "${flags[@]}" MAKEFLAGS="-j$(nproc)" \
      "${pip[@]}" wheel -q --no-deps --no-build-isolation -w "$tmp/build" "$hvd"
    mv "$tmp"/build/horovod-*.whl "$wheels/"
  fi
  "${pip[@]}" install -q --no-deps "$wheels"/horovod-*.whl

  step "pip: hpml from a clean copy of $SRC"
  clean_copy "$SRC" "$tmp/hpml"
  HPML_TENSORFLOW=$variant "${pip[@]}" install -q --no-build-isolation "$tmp/hpml[train]"
  "${pip[@]}" check

  rm -rf "$tmp" /var/lib/apt/lists/*
  find "$SRC" -depth -name __pycache__ -exec rm -rf {} +
  if [ -d "$CACHE" ] && ! mountpoint -q "$CACHE"; then rm -rf "$CACHE"; fi
  apt-get clean # the image's own /var/cache/apt; a cache mounted at $CACHE is left alone

  step "installed ($flavor):"
  echo "  $("$VENV/bin/python" --version)"
  echo "  Open MPI $(dpkg-query -W -f '${Version}' openmpi-bin), PMIx $(dpkg-query -W -f '${Version}' libpmix-dev)"
  "$VENV/bin/python" -c 'import importlib.metadata as m
for d in ("tensorflow", "tensorflow-cpu", "horovod", "mpi4py", "hpml"):
    try: print(f"  {d} {m.version(d)}")
    except m.PackageNotFoundError: pass'
  if [ "$flavor" = gpu ]; then echo "  NCCL $(dpkg-query -W -f '${Version}' libnccl2)"; fi
}

case ${1:-} in
  --apt-packages) apt_packages "${2:-}" | tr ' ' '\n' ;;
  --requirements) requirements "${2:-}" ;;
  --horovod-env) horovod_env "${2:-}" | tr ' ' '\n' ;;
  --clean-copy) clean_copy "${2:?source}" "${3:?destination}" ;;
  cpu | gpu) install_all "$1" ;;
  *) die "usage: install.sh cpu|gpu, or --apt-packages|--requirements|--horovod-env FLAVOR, or --clean-copy SRC DEST" ;;
esac
