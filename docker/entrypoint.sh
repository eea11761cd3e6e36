#!/usr/bin/env bash
# Entrypoint of every zoo image (installed as /usr/local/bin/zoo-entrypoint).
#
#   docker run IMAGE [eval|demo|train|bench|fetch] [ARGS...]
#                                                        zoo <cmd> $ZOO_BUNDLE [--out /out/<run>] ARGS...
#                                                        (no command, or options only: eval)
#   docker run IMAGE doctor [ARGS...]                    zoo doctor ARGS...  (NPU readiness + docker run line)
#   docker run IMAGE COMMAND...                          any other command, e.g. bash, zoo verify /out/<run>
#
# Results go to /out (mount a host directory there), datasets come from /data (mount read-only).
set -u

# CANN: `docker run` starts no login shell, so the toolkit's variables must be set here (ascend.md section 8.4).
# Guarded: some set_env.sh versions stop early under `set -e`/`set -u`.
if [ -f /usr/local/Ascend/ascend-toolkit/set_env.sh ]; then
  set +eu
  # shellcheck disable=SC1091
  . /usr/local/Ascend/ascend-toolkit/set_env.sh
  set -u
fi

# `docker run --user UID:GID` with a uid unknown to the image leaves HOME=/ (not writable).
if [ ! -w "${HOME:-/}" ]; then export HOME=/tmp; fi

die() { echo "zoo-entrypoint: $*" >&2; exit 2; }

out_writable() {
  local probe
  [ -d /out ] && probe=$(mktemp -p /out .zoo-write-test.XXXXXX 2>/dev/null) && rm -f "$probe"
}

require_out() {
  out_writable || die "/out is not writable: mount a writable host directory with -v \"\$PWD/runs:/out\""
}

# --data DIR / --data=DIR given but nothing is there: the dataset was not mounted.
check_data() {
  local data="" prev=""
  for arg in "$@"; do
    case "$arg" in --data=*) data=${arg#--data=} ;; esac
    [ "$prev" = --data ] && data=$arg
    prev=$arg
  done
  [ -z "$data" ] && return 0
  if [ ! -d "$data" ] || [ -z "$(ls -A "$data" 2>/dev/null)" ]; then
    die "--data $data: directory is missing or empty: mount the ${ZOO_BUNDLE:-bundle} dataset read-only with -v /path/to/dataset:$data:ro (for VOC: -v /path/to/VOCdevkit:$data:ro)"
  fi
}

# No command, or options only (docker run IMAGE --data /data): the default command, eval.
if [ $# -eq 0 ] || [ "${1#-}" != "$1" ]; then set -- eval "$@"; fi
cmd=$1
shift
: "${ZOO_BUNDLE:?ZOO_BUNDLE is not set (the image should set it)}"

case "$cmd" in
  doctor)
    exec zoo doctor "${@:-$ZOO_BUNDLE}" ;;
  eval|demo|train)
    require_out
    check_data "$@"
    # One run directory per run under /out, named as `zoo` names them; the cache /out/.cache is shared.
    exec zoo "$cmd" "$ZOO_BUNDLE" --out "/out/$ZOO_BUNDLE-$cmd-$(date -u +%Y%m%d-%H%M%S)" "$@" ;;
  fetch)
    require_out    # downloads land in ZOO_CACHE=/out/.cache
    exec zoo fetch "$ZOO_BUNDLE" "$@" ;;
  bench)
    if ! out_writable && [ "${ZOO_CACHE#/out}" != "$ZOO_CACHE" ]; then
      echo "zoo-entrypoint: /out is not writable: caching exported models in /tmp (lost when the container exits)" >&2
      export ZOO_CACHE=/tmp/zoo-cache
    fi
    exec zoo bench "$ZOO_BUNDLE" "$@" ;;
  *)
    exec "$cmd" "$@" ;;
esac
