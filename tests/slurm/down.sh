#!/usr/bin/env bash
# Stop the cluster started by tests/slurm/up.sh: cancel leftover jobs, then stop slurmd,
# slurmctld and munged by the PIDs up.sh stored (never by name), and restore /etc/slurm/slurm.conf.
# Env: USEG_SLURM_DIR (default /tmp/useg-slurm); USEG_SLURM_KEEP=1 keeps state, logs and the config.
set -uo pipefail

BASE=${USEG_SLURM_DIR:-/tmp/useg-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by useg tests/slurm/up.sh"

say() { echo "[slurm-down] $*"; }

alive() { [ -s "$BASE/pids/$1.pid" ] && kill -0 "$(cat "$BASE/pids/$1.pid")" 2>/dev/null; }

if alive slurmctld; then
  scancel --user="$(id -un)" 2>/dev/null && sleep 1
fi

# stop NAME EXE: TERM the stored PID (if it still runs EXE), KILL after 10 s
stop() {
  local name=$1 exe=$2 pid
  alive "$name" || { rm -f "$BASE/pids/$name.pid"; return 0; }
  pid=$(cat "$BASE/pids/$name.pid")
  if [ "$(readlink -f "/proc/$pid/exe")" != "$(readlink -f "$exe")" ]; then
    say "$name: pid $pid now runs something else; left alone"
  else
    kill -TERM "$pid"
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && { say "$name: still alive after 10 s, KILL"; kill -KILL "$pid"; }
    say "$name: stopped (pid $pid)"
  fi
  rm -f "$BASE/pids/$name.pid"
}

stop slurmd /usr/sbin/slurmd
stop slurmctld /usr/sbin/slurmctld
stop munged /usr/sbin/munged

if [ "${USEG_SLURM_KEEP:-0}" != 1 ]; then
  if [ -f $CONF ] && grep -qF "$MARKER" $CONF; then
    rm -f $CONF
    [ -f $CONF.before-useg ] && mv $CONF.before-useg $CONF
  fi
  [ -d "$BASE/pids" ] && [ -d "$BASE/state" ] && rm -rf "$BASE"
fi
say "done"
