#!/usr/bin/env bash
# A throw-away single-node Slurm cluster on loopback (munge + slurmctld + slurmd), everything
# in one temp dir, for tests. Source this file, then:
#   slurm_cluster_start DIR    starts the daemons (fails loudly if they do not come up)
#   slurm_cluster_stop         stops the daemons this shell started, by PID
# After a start, SLURM_CONF points at DIR/slurm.conf, so sbatch/squeue/scontrol talk to it.
# Needs root (slurmd runs jobs as their submitter; munged runs as the munge user).

SLURM_CLUSTER_PIDS=()

slurm_cluster_log() { echo "slurm-cluster: $*" >&2; }

# Waits up to $2 seconds for command $1 (a string) to succeed.
slurm_cluster_wait_for() {
  local what="$1" seconds="$2" i
  for ((i = 0; i < seconds * 5; i++)); do
    if eval "$what" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  return 1
}

slurm_cluster_start() {
  local dir="$1"
  local tool
  for tool in munged slurmctld slurmd sbatch scontrol sinfo; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      slurm_cluster_log "'$tool' is not installed (apt-get install slurm-wlm munge)"
      return 1
    fi
  done
  if [ "$(id -u)" -ne 0 ]; then
    slurm_cluster_log "needs root (slurmd starts jobs as their owner, munged as 'munge')"
    return 1
  fi
  mkdir -p "$dir"/{munge,state,spool,log,run}
  # munge: a private key and socket, so a system munged (if any) is left alone.
  chown munge:munge "$dir/munge"
  chmod 0711 "$dir/munge"
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chown munge:munge "$dir/munge/munge.key"
  chmod 0400 "$dir/munge/munge.key"
  local socket="$dir/munge/munge.socket"
  setpriv --reuid=munge --regid=munge --init-groups -- munged --foreground --force --socket="$socket" \
    --key-file="$dir/munge/munge.key" --pid-file="$dir/munge/munged.pid" \
    --seed-file="$dir/munge/munged.seed" --log-file="$dir/munge/munged.log" \
    >>"$dir/munge/munged.out" 2>&1 &
  SLURM_CLUSTER_PIDS+=("$!")
  if ! slurm_cluster_wait_for "[ -S '$socket' ]" 20; then
    slurm_cluster_log "munged did not start; its log:"
    cat "$dir/munge/munged.log" >&2 || true
    return 1
  fi
  # Ports from the shell's PID, so parallel test runs on one machine do not collide.
  local port=$((20000 + ($$ % 10000) * 2))
  local cpus
  cpus="$(nproc)"
  cat >"$dir/slurm.conf" <<CONF
ClusterName=beatfarmtest
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1))
AuthType=auth/munge
AuthInfo=socket=$socket
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
JobRequeue=1
ReturnToService=2
MinJobAge=300
KillWait=30
SlurmdTimeout=60
InactiveLimit=0
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus Sockets=1 CoresPerSocket=$cpus ThreadsPerCore=1 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -D -c -f "$SLURM_CONF" >"$dir/log/slurmctld.out" 2>&1 &
  SLURM_CLUSTER_PIDS+=("$!")
  slurmd -D -N localhost -f "$SLURM_CONF" >"$dir/log/slurmd.out" 2>&1 &
  SLURM_CLUSTER_PIDS+=("$!")
  if ! slurm_cluster_wait_for "sinfo -h -N -o '%T' | grep -Eq '^(idle|mixed|allocated)'" 60; then
    slurm_cluster_log "the node did not become idle; sinfo: $(sinfo -N 2>&1 || true)"
    local f
    for f in "$dir"/log/*; do
      slurm_cluster_log "--- $f"
      tail -n 30 "$f" >&2 || true
    done
    return 1
  fi
  slurm_cluster_log "up: $(sinfo -h -N -o '%N %T %c CPUs' 2>&1) (SLURM_CONF=$SLURM_CONF)"
}

slurm_cluster_stop() {
  local pid i
  # Newest first: slurmd, slurmctld, munged.
  for ((i = ${#SLURM_CLUSTER_PIDS[@]} - 1; i >= 0; i--)); do
    pid="${SLURM_CLUSTER_PIDS[$i]}"
    kill -TERM "$pid" 2>/dev/null || true
  done
  for pid in "${SLURM_CLUSTER_PIDS[@]}"; do
    for ((i = 0; i < 50; i++)); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.2
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  SLURM_CLUSTER_PIDS=()
}
