#!/usr/bin/env bash
# A real two-node Slurm cluster on this one machine, for `make test-cluster` (and for trying the
# sbatch templates on a laptop).
#
#   scripts/test-cluster.sh up      install slurm-wlm + munge if missing (root + apt-get), write the
#                                   configuration under $CLEWS_TEST_CLUSTER_DIR, start munged,
#                                   slurmctld and two slurmd (node1, node2); idempotent
#   scripts/test-cluster.sh down    cancel the cluster's jobs, stop exactly the daemons `up` started
#                                   (by the PIDs it recorded); remove the /etc/hosts line it added
#   scripts/test-cluster.sh status  daemons, nodes, jobs
#   scripts/test-cluster.sh env     the line to source: export SLURM_CONF=...
#
# Everything lives under CLEWS_TEST_CLUSTER_DIR (default /tmp/clews-test-cluster): slurm.conf, state,
# spool, pid and log files, the job completion log (jobcomp.txt: final state and times of every job).
# Point a shell at the cluster with:  eval "$(scripts/test-cluster.sh env)"
#
# Exit status of `up`: 0 running; 3 cannot be had here (not root and Slurm/munge not installed, or no
# apt-get): one line on stderr says why (the test suite then skips); 1 anything else (a daemon failed:
# its log is named).
set -euo pipefail

DIR=${CLEWS_TEST_CLUSTER_DIR:-/tmp/clews-test-cluster}
CONF=$DIR/etc/slurm.conf
CTLD_PORT=${CLEWS_TEST_CLUSTER_PORT:-6917}   # slurmd ports: +1, +2 (not the stock 6817/6818)
NODES=(node1 node2)
HOSTS_MARK="# clews-test-cluster"

say() { echo "test-cluster: $*" >&2; }
die() { echo "error: $*" >&2; exit 1; }
cannot() { echo "skip: $*" >&2; exit 3; }
alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { [ -s "$1" ] && cat "$1" || true; }

install_packages() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v sbatch >/dev/null \
     && command -v munged >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || cannot "slurm-wlm/munge are not installed and installing them needs root"
  command -v apt-get >/dev/null || cannot "slurm-wlm/munge are not installed and there is no apt-get"
  say "installing slurm-wlm and munge (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq slurm-wlm munge >"$DIR/log/apt.log" 2>&1; then
    apt-get update -qq >>"$DIR/log/apt.log" 2>&1 || true
    apt-get install -y -qq slurm-wlm munge >>"$DIR/log/apt.log" 2>&1 \
      || cannot "apt-get install slurm-wlm munge failed (see $DIR/log/apt.log)"
  fi
}

write_config() {
  local cpus mem_mb host
  cpus=$(nproc)
  # each node declares the machine's CPUs and a third of its memory (two nodes share one host)
  mem_mb=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) / 3 ))
  host=$(hostname -s)
  mkdir -p "$DIR"/{etc,state,spool,run,log}
  cat >"$CONF.new" <<EOF
# written by scripts/test-cluster.sh: a two-node test cluster on one host
ClusterName=clewstest
SlurmctldHost=$host
SlurmctldPort=$CTLD_PORT
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
ReturnToService=2
MailProg=/bin/true
JobRequeue=1
MinJobAge=86400
KillWait=30
InactiveLimit=0
# a test cluster: look at pending jobs every few seconds (the default is every 60 s)
SchedulerParameters=sched_interval=2,bf_interval=2
NodeName=node1 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((CTLD_PORT + 1)) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
NodeName=node2 NodeHostname=localhost NodeAddr=127.0.0.1 Port=$((CTLD_PORT + 2)) CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=node[1-2] Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
  CHANGED=0
  if [ -f "$CONF" ] && cmp -s "$CONF" "$CONF.new"; then rm -f "$CONF.new"; else mv "$CONF.new" "$CONF"; CHANGED=1; fi
  export SLURM_CONF=$CONF
}

start_munge() {
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    return  # a munged is running (ours from an earlier `up`, or the system's): use it
  fi
  [ "$(id -u)" = 0 ] || cannot "munged is not running and starting it needs root"
  if [ ! -s /etc/munge/munge.key ]; then
    mungekey --create >/dev/null 2>&1 || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 2>/dev/null
    chown munge:munge /etc/munge/munge.key
    chmod 600 /etc/munge/munge.key
  fi
  install -d -o munge -g munge /run/munge
  runuser -u munge -- /usr/sbin/munged
  for _ in $(seq 50); do
    [ -s /run/munge/munged.pid ] && munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
    sleep 0.1
  done
  munge -n | unmunge >/dev/null 2>&1 || die "munged did not start"
  cp /run/munge/munged.pid "$DIR/run/munged.started-by-us.pid"
}

hosts_resolvable() {
  local n
  for n in "${NODES[@]}"; do getent hosts "$n" >/dev/null || return 1; done
}

add_hosts() {
  hosts_resolvable && return
  [ -w /etc/hosts ] || die "node names ${NODES[*]} do not resolve and /etc/hosts is not writable"
  echo "127.0.0.1 ${NODES[*]} $HOSTS_MARK" >>/etc/hosts
}

start_slurmctld() {
  if alive "$(pid_of "$DIR/run/slurmctld.pid")"; then
    if [ "${CHANGED:-0}" = 1 ]; then scontrol reconfigure >/dev/null; fi
    return
  fi
  # -i: ignore state files that do not match (a crashed earlier run), keep what can be read
  slurmctld -i
  for _ in $(seq 100); do
    scontrol ping 2>/dev/null | grep -q 'is UP' && return
    sleep 0.2
  done
  die "slurmctld did not come up (see $DIR/log/slurmctld.log)"
}

start_slurmd() {
  local n
  for n in "${NODES[@]}"; do
    if alive "$(pid_of "$DIR/run/slurmd-$n.pid")"; then continue; fi
    mkdir -p "$DIR/spool/$n"
    slurmd -N "$n"
  done
  for _ in $(seq 150); do
    local states
    states=$(sinfo -h -N -o '%N %t' 2>/dev/null || true)
    if [ "$(grep -cE ' (idle|mix|alloc)$' <<<"$states")" -ge "${#NODES[@]}" ]; then return; fi
    for n in "${NODES[@]}"; do
      if grep -qE "^$n (down|drain|drng|fail)" <<<"$states"; then
        scontrol update nodename="$n" state=resume >/dev/null 2>&1 || true
      fi
    done
    sleep 0.2
  done
  sinfo -N >&2 || true
  die "the nodes did not become idle (see $DIR/log/slurmd-node*.log)"
}

cmd_up() {
  mkdir -p "$DIR/log"
  install_packages
  write_config
  start_munge
  add_hosts
  start_slurmctld
  start_slurmd
  say "up: ${NODES[*]} ($(sinfo -h -o '%P %D nodes %t' | head -1)); use: export SLURM_CONF=$CONF"
}

stop_pid() {  # stop_pid PIDFILE NAME: TERM, wait, KILL
  local pid
  pid=$(pid_of "$1")
  alive "$pid" || { rm -f "$1"; return 0; }
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then kill -9 "$pid" 2>/dev/null || true; fi
  rm -f "$1"
  say "stopped $2 (pid $pid)"
}

cmd_down() {
  export SLURM_CONF=$CONF
  [ -f "$CONF" ] || { say "no cluster under $DIR"; return 0; }
  if alive "$(pid_of "$DIR/run/slurmctld.pid")"; then
    local jobs
    jobs=$(squeue -h -o %i 2>/dev/null || true)
    if [ -n "$jobs" ]; then
      # shellcheck disable=SC2086
      scancel $jobs 2>/dev/null || true
      for _ in $(seq 100); do [ -z "$(squeue -h -o %i 2>/dev/null)" ] && break; sleep 0.2; done
    fi
  fi
  local n
  for n in "${NODES[@]}"; do stop_pid "$DIR/run/slurmd-$n.pid" "slurmd $n"; done
  stop_pid "$DIR/run/slurmctld.pid" slurmctld
  if [ -s "$DIR/run/munged.started-by-us.pid" ]; then
    local pid
    pid=$(cat "$DIR/run/munged.started-by-us.pid")
    if [ "$(pid_of /run/munge/munged.pid)" = "$pid" ]; then
      stop_pid /run/munge/munged.pid munged
    fi
    rm -f "$DIR/run/munged.started-by-us.pid"
  fi
  if grep -q "$HOSTS_MARK" /etc/hosts 2>/dev/null && [ -w /etc/hosts ]; then
    # rewrite in place (/etc/hosts may be a bind mount): keep every line but ours
    grep -v "$HOSTS_MARK" /etc/hosts >"$DIR/hosts.tmp" || true
    cat "$DIR/hosts.tmp" >/etc/hosts
    rm -f "$DIR/hosts.tmp"
  fi
}

cmd_status() {
  export SLURM_CONF=$CONF
  local n
  echo "slurmctld: $(alive "$(pid_of "$DIR/run/slurmctld.pid")" && echo "pid $(cat "$DIR/run/slurmctld.pid")" || echo stopped)"
  for n in "${NODES[@]}"; do
    echo "slurmd $n: $(alive "$(pid_of "$DIR/run/slurmd-$n.pid")" && echo "pid $(cat "$DIR/run/slurmd-$n.pid")" || echo stopped)"
  done
  if alive "$(pid_of "$DIR/run/slurmctld.pid")"; then sinfo -N; squeue; fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 up|down|status|env" >&2; exit 2 ;;
esac
