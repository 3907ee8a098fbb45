#!/usr/bin/env bash
# Start a throwaway one-node Slurm cluster on this machine for the tests (munged, slurmctld and
# slurmd, every file under DIR, on free loopback ports); prints the path of its slurm.conf on
# stdout, for SLURM_CONF. The machine's own /etc/slurm and /etc/munge are never touched.
# Usage: conf=$(scripts/slurm.sh start DIR); export SLURM_CONF=$conf; ... ; scripts/slurm.sh stop DIR
# Installs Debian's slurm-wlm and munge when run as root and they are missing.
set -euo pipefail
usage="usage: scripts/slurm.sh start DIR | stop DIR"
action="${1:-}"; dir="${2:-}"
here="$(cd "$(dirname "$0")" && pwd)"
# Every check is a plain test that cannot end the script under set -e before the install.
missing() {
  local tool
  for tool in munged slurmctld slurmd sbatch squeue sinfo scontrol scancel; do
    command -v "$tool" >/dev/null 2>&1 || { echo "$tool"; return 0; }
  done
  return 0
}
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
fail() { echo "scripts/slurm.sh: $1" >&2; exit 1; }
stop_daemons() {
  local name pid
  for name in slurmd slurmctld munged; do
    if [ -f "$dir/$name.pid" ]; then
      pid="$(cat "$dir/$name.pid" 2>/dev/null || true)"
      if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    fi
  done
  # slurmd's job steps (slurmstepd) die with it; give the daemons a moment to go
  for _ in $(seq 50); do
    alive=""
    for name in slurmd slurmctld munged; do
      if [ -f "$dir/$name.pid" ]; then
        pid="$(cat "$dir/$name.pid" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then alive=1; fi
      fi
    done
    [ -z "$alive" ] && break
    sleep 0.1
  done
}
case "$action" in
  start)
    [ -n "$dir" ] || { echo "$usage" >&2; exit 2; }
    if [ -n "$(missing)" ]; then
      "$here/apt_install.sh" slurm-wlm munge
      tool="$(missing)"
      [ -z "$tool" ] || fail "the slurm-wlm and munge packages installed no '$tool'"
    fi
    mkdir -p "$dir/state" "$dir/spool" "$dir/munge"
    dir="$(cd "$dir" && pwd)"
    chmod 700 "$dir/munge"
    # A key of this cluster's own (munged wants it private and at least 32 bytes).
    head -c 1024 /dev/urandom > "$dir/munge/munge.key"
    chmod 400 "$dir/munge/munge.key"
    munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
      --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" \
      --seed-file="$dir/munge/munge.seed" >/dev/null 2>&1 ||
      fail "munged did not start (see $dir/munged.log)"
    host="$(hostname -s)"
    # This node as slurmd sees it (CPUs, sockets, memory), so that it never drains itself for
    # a configuration that disagrees with the hardware.
    node="$(slurmd -C 2>/dev/null | head -n 1)"
    case "$node" in NodeName=*) ;; *) fail "slurmd -C did not describe this node (it printed '$node')" ;; esac
    # Memory is a consumable like CPUs: a job that asks for none gets a share per CPU, not
    # the whole node (which would run one job at a time).
    mem="$(echo "$node" | tr ' ' '\n' | sed -n 's/^RealMemory=//p')"
    cpus="$(echo "$node" | tr ' ' '\n' | sed -n 's/^CPUs=//p')"
    per_cpu=$(( ${mem:-1024} / ${cpus:-1} ))
    user="$(id -un)"
    cat > "$dir/slurm.conf" <<EOF
# A one-node test cluster written by scripts/slurm.sh; every file it uses is under $dir.
ClusterName=fairtrial-test
SlurmctldHost=$host(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$dir/munge/munge.socket
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# No cgroups in a container: processes are tracked by their parent, tasks are not confined.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SwitchType=switch/none
ReturnToService=2
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=$per_cpu
# Quick to kill (scancel), quick to notice a finished job
KillWait=5
MinJobAge=300
MaxArraySize=10001
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
    export SLURM_CONF="$dir/slurm.conf"
    slurmctld -f "$SLURM_CONF" >/dev/null 2>&1 || fail "slurmctld did not start (see $dir/slurmctld.log)"
    slurmd -f "$SLURM_CONF" -N "$host" >/dev/null 2>&1 || fail "slurmd did not start (see $dir/slurmd.log)"
    state=""
    for _ in $(seq 300); do
      state="$(sinfo -h -n "$host" -o %t 2>/dev/null | head -n 1 || true)"
      if [ "$state" = "idle" ]; then break; fi
      sleep 0.1
    done
    if [ "$state" != "idle" ]; then
      stop_daemons
      fail "the node did not become idle within 30 s (sinfo says '${state:-nothing}'; see $dir/slurmctld.log and $dir/slurmd.log)"
    fi
    echo "$SLURM_CONF"
    ;;
  stop)
    [ -n "$dir" ] || { echo "$usage" >&2; exit 2; }
    # Never installs: without the daemons' pid files nothing of this cluster can be running.
    if [ -d "$dir" ]; then
      if [ -f "$dir/slurm.conf" ] && command -v scancel >/dev/null 2>&1; then
        SLURM_CONF="$dir/slurm.conf" scancel --user "$(id -un)" >/dev/null 2>&1 || true
      fi
      stop_daemons
      rm -rf "$dir"
    fi
    ;;
  *)
    echo "$usage" >&2; exit 2
    ;;
esac
