#!/usr/bin/env bash
# Stop the test cluster started by ci/slurm/start.sh: cancel its jobs, then end the daemons by the
# PIDs recorded in $SPEMD_SLURM_STATE/pids (default /var/lib/spemd-slurm/pids).
set -uo pipefail
STATE=${SPEMD_SLURM_STATE:-/var/lib/spemd-slurm}
log() { echo "[ci/slurm/stop] $*" >&2; }

if [ ! -f "$STATE/pids" ]; then
    log "no $STATE/pids: nothing to stop"; exit 0
fi
scancel --user=root 2>/dev/null || true

# reverse start order: slurmd, slurmctld, munged
mapfile -t lines < <(tac "$STATE/pids")
for line in "${lines[@]}"; do
    read -r name pid <<< "$line"
    [ -n "${pid:-}" ] || continue
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            log "$name ($pid) did not stop on TERM; sending KILL"
            kill -KILL "$pid" 2>/dev/null || true
        fi
        log "stopped $name ($pid)"
    fi
done
rm -f "$STATE/pids"
