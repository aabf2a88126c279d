#!/usr/bin/env bash
# A one-node Slurm cluster in DIR for the tests (as root; Debian's slurm-wlm and munge):
#   scripts/slurm-one-node.sh start DIR   writes DIR/slurm.conf, starts munged, slurmctld, slurmd
#   scripts/slurm-one-node.sh stop DIR    stops them
# Clients then need SLURM_CONF=DIR/slurm.conf. Nothing outside DIR is configured, except
# munge's own key and run folder, which the munge package owns anyway.
set -euo pipefail
action=${1:?start or stop}; dir=$(realpath -m "${2:?folder}")
case "$action" in
start)
    mkdir -p "$dir/spool/ctld" "$dir/spool/d" "$dir/log"
    node=$(hostname -s)
    cpus=$(nproc)
    cat > "$dir/slurm.conf" <<CONF
ClusterName=charter-test
SlurmctldHost=$node
SlurmctldPort=$((6817 + RANDOM % 1000 * 2))
SlurmdPort=$((7817 + RANDOM % 1000 * 2))
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/builtin
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
ReturnToService=2
StateSaveLocation=$dir/spool/ctld
SlurmdSpoolDir=$dir/spool/d
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$node CPUs=$cpus State=UNKNOWN
PartitionName=test Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:4
CONF
    mkdir -p /run/munge && chown munge:munge /run/munge
    [ -f /etc/munge/munge.key ] || { dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 2>/dev/null; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
    pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
    export SLURM_CONF=$dir/slurm.conf
    /usr/sbin/slurmctld -f "$SLURM_CONF"
    /usr/sbin/slurmd -f "$SLURM_CONF"
    for _ in $(seq 100); do
        sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && exit 0
        sleep 0.2
    done
    echo "slurm-one-node: the node did not come up; see $dir/log" >&2
    exit 1
    ;;
stop)
    for pidfile in "$dir/slurmd.pid" "$dir/slurmctld.pid"; do
        [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
    done
    ;;
*) echo "slurm-one-node: start or stop, not $action" >&2; exit 2 ;;
esac
