#!/usr/bin/env bash
# Start a one-node Slurm cluster on this machine, for tests (tests/test_slurm_workflow.py).
#
# Installs Debian's slurm-wlm + munge if missing, writes /etc/slurm/{slurm,gres,cgroup}.conf for the
# local host (CPUs from nproc, capped at SPEMD_SLURM_CPUS; two fake `gpu` GRES backed by device nodes
# so GPU requests are exercised), starts munged, slurmctld and slurmd, records their PIDs in
# $STATE/pids, and waits until `sinfo` shows the node idle. Idempotent: a running cluster started by
# this script is left alone. Stop it with ci/slurm/stop.sh.
#
# Environment: SPEMD_SLURM_STATE (default /var/lib/spemd-slurm), SPEMD_SLURM_CPUS (default 2),
#              SPEMD_SLURM_GPUS (default 2), SPEMD_SLURM_WAIT (seconds to wait for idle, default 60).
# Needs root (writes /etc/slurm and runs the daemons as root).
set -euo pipefail

STATE=${SPEMD_SLURM_STATE:-/var/lib/spemd-slurm}
NCPU=${SPEMD_SLURM_CPUS:-2}
NGPU=${SPEMD_SLURM_GPUS:-2}
WAIT=${SPEMD_SLURM_WAIT:-60}
GPU_TYPE=fakegpu   # the gpu_model the slurm-test profile asks for
CONF_DIR=/etc/slurm

log() { echo "[ci/slurm/start] $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "must run as root"; exit 1
fi

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }

# --- already running? -------------------------------------------------------------------------------
if [ -f "$STATE/pids" ]; then
    all=1
    while read -r name pid; do alive "$pid" || all=0; done < "$STATE/pids"
    if [ "$all" = 1 ] && sinfo -h -o %t 2>/dev/null | grep -q idle; then
        log "cluster already running (pids in $STATE/pids)"; exit 0
    fi
    log "stale $STATE/pids: stopping what is left first"
    "$(dirname "$0")/stop.sh" || true
fi

# --- packages -------------------------------------------------------------------------------------
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null \
   || ! command -v sbatch >/dev/null; then
    log "installing slurm-wlm and munge (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
fi

# --- host names -----------------------------------------------------------------------------------
HOST=$(hostname -s)
grep -Eq "^[0-9.]+[[:space:]].*\blocalhost\b" /etc/hosts || echo "127.0.0.1 localhost" >> /etc/hosts
if ! getent hosts "$HOST" >/dev/null; then
    log "adding $HOST to /etc/hosts"
    echo "127.0.0.1 $HOST" >> /etc/hosts
fi

# a fresh cluster every time: no jobs or node state from an earlier start
rm -rf "$STATE/ctld" "$STATE/spool"
mkdir -p "$STATE"/{ctld,spool,log} "$CONF_DIR"

# --- fake GPU device nodes (character devices; same major/minor as /dev/null) ----------------------
GRES_LINES=""
for ((i = 0; i < NGPU; i++)); do
    dev=/dev/spemd-fakegpu$i
    if [ ! -e "$dev" ]; then
        mknod -m 666 "$dev" c 1 3 2>/dev/null || true
    fi
    if [ ! -c "$dev" ]; then
        # mknod not permitted (some sandboxes): fall back to an existing character device
        dev=/dev/null
        [ "$i" -gt 0 ] && dev=/dev/zero
        [ "$i" -gt 1 ] && { log "cannot create more than 2 fake GPU device nodes"; NGPU=2; break; }
    fi
    GRES_LINES+="NodeName=$HOST Name=gpu Type=$GPU_TYPE File=$dev"$'\n'
done

MEM_MB=$(awk '/MemTotal/ {printf "%d", $2/1024*0.8}' /proc/meminfo)

# --- configuration --------------------------------------------------------------------------------
cat > "$CONF_DIR/slurm.conf" <<CONF
# Written by spemd ci/slurm/start.sh: one-node test cluster. Do not use in production.
ClusterName=spemd-ci
SlurmctldHost=$HOST
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ReturnToService=2
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
GresTypes=gpu
# finished jobs stay visible to squeue for an hour: Snakemake's slurm plugin polls with squeue
# here (no accounting, so no sacct) and would otherwise never see a job finish
MinJobAge=3600
KillWait=5
InactiveLimit=0
Waittime=0
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM_MB Gres=gpu:$GPU_TYPE:$NGPU State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF

printf 'AutoDetect=off\n%s' "$GRES_LINES" > "$CONF_DIR/gres.conf"

# slurmd 22.05 initialises the cgroup plugin even with proctrack/linuxproc + task/none; point it at
# v1 without constraining anything (containers without a writable cgroup hierarchy still work).
cat > "$CONF_DIR/cgroup.conf" <<CONF
CgroupPlugin=cgroup/v1
CgroupAutomount=no
ConstrainCores=no
ConstrainDevices=no
ConstrainRAMSpace=no
ConstrainSwapSpace=no
CONF

# --- munge ----------------------------------------------------------------------------------------
mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
if [ ! -s /etc/munge/munge.key ]; then
    log "creating munge key"
    (command -v mungekey >/dev/null && mungekey --create --force) \
        || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null
fi
chown -R munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
chmod 0700 /etc/munge /var/log/munge /var/lib/munge
chmod 0755 /run/munge
chmod 0400 /etc/munge/munge.key

: > "$STATE/pids"
start_bg() {  # name, command...: start in its own session, record the PID
    local name=$1; shift
    setsid "$@" > "$STATE/log/$name.out" 2>&1 < /dev/null &
    echo "$name $!" >> "$STATE/pids"
}

start_bg munged runuser -u munge -- /usr/sbin/munged --foreground
for _ in $(seq 50); do [ -S /run/munge/munge.socket.2 ] && break; sleep 0.1; done
# runuser forks: record munged's own PID as well, so stop.sh can end it
sleep 0.3
mpid=$(cat /run/munge/munged.pid 2>/dev/null || true)
[ -n "$mpid" ] && echo "munged-daemon $mpid" >> "$STATE/pids"
munge -n | unmunge >/dev/null || { log "munge does not work; see $STATE/log/munged.out"; exit 1; }

start_bg slurmctld /usr/sbin/slurmctld -D -i
for _ in $(seq 100); do scontrol ping 2>/dev/null | grep -q UP && break; sleep 0.2; done
start_bg slurmd /usr/sbin/slurmd -D

# --- wait for the node ----------------------------------------------------------------------------
t0=$(date +%s)
while true; do
    state=$(sinfo -h -n "$HOST" -o %t 2>/dev/null | head -1 || true)
    case "$state" in
        idle) break ;;
        down*|drain*|inval*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;;
    esac
    if (( $(date +%s) - t0 > WAIT )); then
        log "node not idle after ${WAIT}s (state '$state'); logs:"
        tail -n 20 "$STATE/log/"*.log "$STATE/log/"*.out >&2 || true
        exit 1
    fi
    sleep 0.5
done
log "cluster up in $(( $(date +%s) - t0 ))s: node $HOST, $NCPU CPUs, gpu:$GPU_TYPE:$NGPU (pids in $STATE/pids)"
sinfo
