#!/usr/bin/env bash
# make container-check: build a `Bootstrap: debootstrap` definition the way `apptainer build`
# does, without Apptainer, then train the demo inside the result on 2 MPI ranks.
#
#   bash containers/check.sh containers/hpml-cpu.def      (as root, from the repository root)
#
# What `apptainer build` does for this bootstrap, step by step (apptainer's
# internal/pkg/build/sources/conveyorPacker_debootstrap.go, stage.go, files/copy.go, metadata.go):
#   1. debootstrap --variant=minbase --exclude=... --include=apt,<Include> <OSVersion> ROOT <MirrorURL>
#   2. %files: `cp -fLr SRC ROOT/DST` from the current folder, parents created
#   3. %post:  /bin/sh -ex, cwd /, clean environment, /proc /sys /dev and resolv.conf/hosts bound
#   4. %environment -> /.singularity.d/env/90-environment.sh; %test -> /.singularity.d/test, run
#      after sourcing /.singularity.d/env/*.sh
# Everything comes from the definition (containers/deffile.py reads it); nothing is restated here.
#
# Outside the repository: the root and the logs in a fresh private folder (mktemp -d, mode 0700) under
# $HPML_CONTAINER_WORK (default ${TMPDIR:-/var/tmp}), removed on exit (HPML_CONTAINER_KEEP=1 keeps it
# for inspection; a fixed path there could be a planted symlink), and caches in $HPML_CONTAINER_CACHE
# (default ~/.cache/hpml/container): the debootstrap tarball, keyed by the header; apt archives,
# pip's cache and the Horovod wheel, bound at /var/cache/hpml during %post (install.sh keys the
# wheel by TensorFlow, Horovod, OS, Python and build flags).
set -euo pipefail

DEF=${1:?usage: containers/check.sh DEFINITION}
REPO=$PWD
PY=${PYTHON:-python3}
WORK_PARENT=${HPML_CONTAINER_WORK:-${TMPDIR:-/var/tmp}}
CACHE=${HPML_CONTAINER_CACHE:-$HOME/.cache/hpml/container}
WORK= # made below, once the definition has been checked
RANKS=2
T0=$(date +%s)

say() { echo "container-check: $*"; }
die() {
  echo "container-check: error: $*" >&2
  exit 1
}
def() { "$PY" "$REPO/containers/deffile.py" "$DEF" "$@"; }
elapsed() { echo $(($(date +%s) - $1)); }

[ "$(id -u)" = 0 ] || die "debootstrap and chroot need root (apptainer build needs it for this bootstrap too)"
[ -f "$DEF" ] || die "no definition at $DEF"
[ -f "$REPO/containers/deffile.py" ] || die "run from the repository root"
if ! command -v debootstrap >/dev/null; then
  say "installing debootstrap (Debian package)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi

bootstrap=$(def header bootstrap)
[ "$bootstrap" = debootstrap ] || die "$DEF: Bootstrap is '$bootstrap'; only debootstrap can be built here"
osversion=$(def header osversion)
mirror=$(def header mirrorurl)
if [ -z "$osversion" ] || [ -z "$mirror" ]; then die "$DEF: debootstrap needs OSVersion and MirrorURL"; fi
include=$(def header include)
include=$(echo "$include ${INCLUDE:-}" | xargs | tr ' ' ',')
for section in post test; do
  [ -z "$(def args "$section")" ] || die "$DEF: arguments after %$section are not supported here"
done

mkdir -p "$CACHE/debootstrap" "$CACHE/build"
exec 9>"$CACHE/.lock" # the caches are shared between runs; each run's root is its own
flock -n 9 || die "another container-check is running ($CACHE/.lock)"

# --- mounts: always undone, on success, failure or interrupt --------------------------------
mounts=()
mounted_under() { awk -v root="$1" '$5 == root || index($5, root "/") == 1 { print $5 }' /proc/self/mountinfo; }
unmount_all() {
  local i m left
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
    umount -R "${mounts[i]}" 2>/dev/null || umount -R -l "${mounts[i]}" || true
  done
  mounts=()
  # anything else under the root: debootstrap's own /proc and /sys if it died, or a killed run
  for m in $(mounted_under "$ROOT" | sort -r); do umount -R -l "$m" 2>/dev/null || true; done
  left=$(mounted_under "$ROOT")
  [ -z "$left" ] || { echo "container-check: still mounted under $ROOT:" "$left" >&2; return 1; }
}
cleanup() { # on exit: unmount, then remove this run's folder (never while anything is mounted in it)
  local code=$?
  if ! unmount_all || [ -n "$(mounted_under "$WORK")" ]; then
    echo "container-check: not removing $WORK: something is still mounted under it" >&2
    exit 1
  fi
  if [ "${HPML_CONTAINER_KEEP:-0}" = 1 ]; then
    echo "container-check: kept $WORK (HPML_CONTAINER_KEEP=1)"
  else
    rm -rf --one-file-system "$WORK"
    [ "$code" = 0 ] || echo "container-check: removed $WORK and its logs; HPML_CONTAINER_KEEP=1 keeps them" >&2
  fi
}
mkdir -p "$WORK_PARENT"
WORK=$(mktemp -d "$WORK_PARENT/hpml-container-check.XXXXXXXX") # new, 0700, ours: no planted path
ROOT=$WORK/root
trap 'cleanup' EXIT
trap 'exit 130' INT TERM
bind() { # bind SRC DST [rbind]: DST inside the root
  mount "--${3:-bind}" "$1" "$ROOT$2"
  mounts+=("$ROOT$2")
  if [ "${3:-}" = rbind ]; then mount --make-rslave "$ROOT$2"; fi
}
mount_system() {
  mount -t proc proc "$ROOT/proc" && mounts+=("$ROOT/proc")
  bind /sys /sys rbind
  bind /dev /dev rbind
  for f in /etc/resolv.conf /etc/hosts; do
    rm -f "$ROOT$f" && touch "$ROOT$f" && bind "$f" "$f"
  done
  # Site CAs (Debian's place for them), for networks that inspect TLS: a build behind such a
  # proxy needs them as much as it needs resolv.conf. ca-certificates adds them to the bundle.
  if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    mount --bind -o ro /usr/local/share/ca-certificates "$ROOT/usr/local/share/ca-certificates"
    mounts+=("$ROOT/usr/local/share/ca-certificates")
  fi
}
# Run a command in the root with a clean environment (apptainer build uses --cleanenv).
in_root() {
  chroot "$ROOT" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
# ... and after sourcing the image's environment, as `apptainer exec` does.
in_image() {
  # shellcheck disable=SC2016 # expanded by the shell inside the image
  in_root /bin/sh -c 'for s in $(ls /.singularity.d/env/*.sh | sort -n); do [ -f "$s" ] && . "$s"; done; exec "$@"' sh "$@"
}

# --- 1. bootstrap ------------------------------------------------------------------------------
# Apptainer's own call (conveyorPacker_debootstrap.go), with a cached tarball of the downloads.
# shellcheck disable=SC2054 # the commas belong to debootstrap's --exclude/--include
args=(--variant=minbase --exclude=openssl,udev,debconf-i18n,e2fsprogs --include=apt,"$include"
  --arch="$(dpkg --print-architecture)")
key=$(printf '%s\n' "${args[@]}" "$osversion" "$mirror" | sha256sum | cut -c1-16)
tarball=$CACHE/debootstrap/$osversion-$key.tgz
t=$(date +%s)
if [ ! -f "$tarball" ]; then
  say "downloading $osversion from $mirror (cached as $tarball)"
  rm -rf "$WORK/download"
  debootstrap "${args[@]}" --make-tarball="$tarball.tmp" "$osversion" "$WORK/download" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
    die "debootstrap --make-tarball failed; see $WORK/debootstrap.log"
  mv "$tarball.tmp" "$tarball"
  rm -rf "$WORK/download"
  cached_tarball=no
else
  cached_tarball=yes
fi
say "debootstrap $osversion into $ROOT"
debootstrap "${args[@]}" --unpack-tarball="$tarball" "$osversion" "$ROOT" "$mirror" >>"$WORK/debootstrap.log" 2>&1 ||
  die "debootstrap failed; see $WORK/debootstrap.log"
chmod 0755 "$ROOT"
mkdir -p "$ROOT/.singularity.d/env"
t_bootstrap=$(elapsed "$t")

# --- 2. %files ---------------------------------------------------------------------------------
while IFS=$'\t' read -r src dst; do
  [ -n "$dst" ] || dst=$src
  dest=$ROOT/${dst#/}
  if [[ $dst == */ ]]; then mkdir -p "$dest"; else mkdir -p "$(dirname "$dest")"; fi
  cp -fLr "$src" "$dest"
done < <(def files)

# --- 3. %post ----------------------------------------------------------------------------------
def section post >"$ROOT/.post.script"
mount_system
mkdir -p "$ROOT/var/cache/hpml"
bind "$CACHE/build" /var/cache/hpml
say "running %post (log: $WORK/post.log)"
t=$(date +%s)
(cd / && in_root /bin/sh -ex /.post.script) >"$WORK/post.log" 2>&1 || {
  tail -n 40 "$WORK/post.log" >&2
  die "%post failed; whole log in $WORK/post.log"
}
t_post=$(elapsed "$t")
umount "$ROOT/var/cache/hpml" && unset 'mounts[-1]' && rmdir "$ROOT/var/cache/hpml"
rm -f "$ROOT/.post.script"
awk '/^install.sh: \[/ { print; v = /installed/; next } v && /^  / { print; next } { v = 0 }' \
  "$WORK/post.log" | sed 's/^/  /'

# --- 4. %environment, %test --------------------------------------------------------------------
{
  printf '#!/bin/sh\n\n'
  def section environment
} >"$ROOT/.singularity.d/env/90-environment.sh"
{
  printf '#!/bin/sh\n\n'
  def section test
} >"$ROOT/.singularity.d/test"
chmod 0755 "$ROOT/.singularity.d/env/90-environment.sh" "$ROOT/.singularity.d/test"
size_mb=$(du -sxm "$ROOT" | cut -f1)
say "running %test"
t=$(date +%s)
in_image /.singularity.d/test || die "%test failed"
t_test=$(elapsed "$t")

# --- 5. the demo inside the image: hpml --help, then preprocess + train on 2 MPI ranks --------
say "hpml --help, then the demo on $RANKS MPI ranks inside the image (log: $WORK/demo.log)"
t=$(date +%s)
in_image hpml --help >/dev/null || die "hpml --help failed inside the image"
# shellcheck disable=SC2016 # runs inside the image
demo='set -e
cd /tmp && rm -rf check && mkdir check && cd check
cfg=/opt/hpml/src/configs/demo.yaml
mpi="mpirun --oversubscribe -np $1"
hpml synth --out raw --per-class 30
hpml covidx build --sources raw/* --out split
$mpi hpml preprocess --config $cfg --split-dir split --out shards
$mpi hpml train --config $cfg --shards shards --run-dir run --set train.epochs=2'
in_image env OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 TF_CPP_MIN_LOG_LEVEL=2 \
  /bin/sh -c "$demo" sh "$RANKS" >"$WORK/demo.log" 2>&1 || {
  tail -n 40 "$WORK/demo.log" >&2
  die "the demo failed inside the image; whole log in $WORK/demo.log"
}
t_demo=$(elapsed "$t")
run=$ROOT/tmp/check/run
epochs=$(($(wc -l <"$run/history.csv") - 1))
[ "$epochs" = 2 ] || die "expected 2 epochs in $run/history.csv, found $epochs"
# Every rank logs the digest of its final weights: Horovod keeps them identical, so there must be
# one line per rank and a single digest.
digests=$(grep -E "\[[0-9]+/$RANKS\] .*training done; weights sha256" "$WORK/demo.log" || true)
[ "$(wc -l <<<"$digests")" = "$RANKS" ] || die "expected $RANKS ranks to finish training:"$'\n'"$digests"
[ "$(awk '{print $NF}' <<<"$digests" | sort -u | wc -l)" = 1 ] || die "ranks ended with different weights:"$'\n'"$digests"
say "OK: $DEF built; the demo trained inside it on $RANKS MPI ranks, $epochs epochs, same weights on every rank ($(awk '{print $NF}' <<<"$digests" | head -n1))"
say "root: ${size_mb} MB after %post (du -sxm); $WORK is removed now (HPML_CONTAINER_KEEP=1 keeps it)"
say "times (s): bootstrap ${t_bootstrap} (tarball cached: $cached_tarball), %post ${t_post}," \
  "%test ${t_test}, demo ${t_demo}, total $(elapsed "$T0")"
