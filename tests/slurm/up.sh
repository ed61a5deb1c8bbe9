#!/usr/bin/env bash
# Start a real single-node Slurm cluster on loopback for the `slurm`-marked tests (run as root).
#
#   munged, slurmctld and slurmd run as plain background processes (no systemd); their PIDs are
#   written to $USEG_SLURM_DIR/pids/ and down.sh stops exactly those PIDs.
#   No accounting daemon: job status comes from `squeue`, which keeps finished jobs for MinJobAge
#   seconds (the Snakemake Slurm plugin trusts squeue only when MinJobAge >= 3 x its
#   slurm-init-seconds-before-status-checks; tests/slurm/profile sets 5 s).
#
# Usage:  bash tests/slurm/up.sh      then   bash tests/slurm/down.sh
# Env:    USEG_SLURM_DIR        state, spool, logs and PIDs   (default /tmp/useg-slurm)
#         USEG_SLURM_PARTITION  partition name                (default debug)
#         USEG_SLURM_MEM_MB     node RealMemory in MB         (default: what slurmd -C reports)
#         USEG_SLURM_SKIP_APT=1 do not install missing Debian packages
# Writes /etc/slurm/slurm.conf (where every Slurm command looks); a foreign one is backed up and
# restored by down.sh.
set -euo pipefail

BASE=${USEG_SLURM_DIR:-/tmp/useg-slurm}
PARTITION=${USEG_SLURM_PARTITION:-debug}
CONF=/etc/slurm/slurm.conf
MARKER="# written by useg tests/slurm/up.sh"
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
START=$SECONDS

say() { echo "[slurm-up +$((SECONDS - START))s] $*"; }
fail() { echo "[slurm-up] ERROR: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "run as root (the daemons and /etc/slurm need it)"

install_packages() {
  local missing=()
  for pkg in slurmctld slurmd slurm-client munge; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  [ ${#missing[@]} = 0 ] && return 0
  say "installing ${missing[*]}"
  # a policy-rc.d that says no keeps the packages' scripts from starting services themselves
  local policy=/usr/sbin/policy-rc.d ours=0
  if [ ! -e $policy ]; then printf '#!/bin/sh\nexit 101\n' >$policy; chmod +x $policy; ours=1; fi
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ $ours = 1 ] && rm -f $policy
  return 0
}

# spawn NAME CMD...: run a foreground daemon detached in its own session; the wrapper shell
# writes its own PID and then execs CMD, so the PID file holds the daemon's PID.
spawn() {
  local name=$1; shift
  rm -f "$BASE/pids/$name.pid"
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$BASE/pids/$name.pid" "$@" \
    >"$BASE/log/$name.out" 2>&1 </dev/null &
  for _ in $(seq 50); do [ -s "$BASE/pids/$name.pid" ] && return 0; sleep 0.1; done
  fail "$name did not start"
}

# wait_for SECONDS CMD...: poll CMD every 0.2 s until it succeeds
wait_for() {
  local tries=$(($1 * 5)); shift
  for _ in $(seq "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  return 1
}

[ "${USEG_SLURM_SKIP_APT:-0}" = 1 ] || install_packages

for name in munged slurmctld slurmd; do
  pidfile="$BASE/pids/$name.pid"
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    fail "$name is already running (pid $(cat "$pidfile")); run tests/slurm/down.sh first"
  fi
done

# a failed start stops what it started
trap '[ $? = 0 ] || { echo "[slurm-up] failed; logs in $BASE/log" >&2; USEG_SLURM_KEEP=1 bash "$HERE/down.sh" >&2; }' EXIT

mkdir -p "$BASE"/{pids,log,state,spool}
chmod 755 "$BASE"

# ---- munge: the key and /run/munge (tmpfs, gone after a reboot) must exist
install -d -o munge -g munge -m 755 /run/munge
install -d -o munge -g munge -m 700 /etc/munge /var/lib/munge /var/log/munge
[ -s /etc/munge/munge.key ] || mungekey --create --keyfile=/etc/munge/munge.key
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
say "starting munged"
spawn munged setpriv --reuid=munge --regid=munge --init-groups /usr/sbin/munged --foreground
munge_ok() { munge -n </dev/null | unmunge; }
wait_for 10 munge_ok || fail "munge does not work: $(cat "$BASE/log/munged.out")"

# ---- slurm.conf for this host
NODE=$(hostname -s)
CPUS=$(nproc)
MEM=${USEG_SLURM_MEM_MB:-$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')}
if [ -e $CONF ] && ! grep -qF "$MARKER" $CONF; then
  cp -a $CONF $CONF.before-useg
  say "kept the existing $CONF as $CONF.before-useg"
fi
mkdir -p /etc/slurm
cat >$CONF <<CONF
$MARKER (state in $BASE)
ClusterName=useg-test
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$BASE/state
SlurmdSpoolDir=$BASE/spool
SlurmctldPidFile=$BASE/slurmctld.pidfile
SlurmdPidFile=$BASE/slurmd.pidfile
SlurmctldLogFile=$BASE/log/slurmctld.log
SlurmdLogFile=$BASE/log/slurmd.log
# no cgroups: process tracking by /proc, no task confinement
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
# no slurmdbd: sacct is unusable, squeue reports job states
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
# finished jobs stay visible to 'squeue --states=all' for an hour (a slow test run still sees all of its jobs)
MinJobAge=3600
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
# a job without --mem would otherwise get the whole node's memory
DefMemPerCPU=1000
MailProg=/bin/true
MpiDefault=none
ReturnToService=2
InactiveLimit=0
KillWait=5
Waittime=0
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$CPUS RealMemory=$MEM State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
CONF

# ---- controller and node daemon, in the foreground (-D) under spawn; -i ignores old state
say "starting slurmctld"
spawn slurmctld /usr/sbin/slurmctld -D -i
ctld_up() { scontrol ping | grep -q 'is UP'; }
wait_for 20 ctld_up || fail "slurmctld did not come up: $(tail -n 20 "$BASE/log/slurmctld.log")"
say "starting slurmd"
spawn slurmd /usr/sbin/slurmd -D -N "$NODE"
node_idle() { sinfo -h -N -n "$NODE" -o '%T' | grep -qE '^(idle|mixed|allocated)$'; }
wait_for 30 node_idle || fail "node $NODE is not idle: $(sinfo -N -l; tail -n 20 "$BASE/log/slurmd.log")"

[ "$(srun -N1 -n1 -t 1 hostname -s)" = "$NODE" ] || fail "srun on $NODE failed"
say "up: $(sinfo -h -o '%P %D node(s) %c cpus %m MB %T'); pids: $(cd "$BASE/pids" && for f in *.pid; do printf '%s=%s ' "${f%.pid}" "$(cat "$f")"; done)"
