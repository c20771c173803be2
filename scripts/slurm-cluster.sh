#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for tests, benchmarks and demos.
#
#   scripts/slurm-cluster.sh start    wipe the state folder, start munged, MariaDB, slurmdbd,
#                                     slurmctld and slurmd; return when the node is idle
#   scripts/slurm-cluster.sh stop     cancel jobs, stop the daemons by their pid files
#   scripts/slurm-cluster.sh status   print the daemons and `sinfo`; exit 0 when all are up
#   scripts/slurm-cluster.sh env      print `export SLURM_CONF=...` for clients of this cluster
#
# Needs root and Debian's packages slurmctld slurmd slurm-client munge slurmdbd mariadb-server
# (scripts/install-system-deps.sh). There is no systemd here, so every daemon is started by
# hand, with its pid, log and state files in one scratch folder ($FINESCALE_SLURM_STATE,
# default /tmp/finescale-slurm) that `start` wipes: job ids restart at 1 with each start.
#
# Clients find the cluster through /etc/slurm/slurm.conf, which `start` links to the state
# folder's copy when that path is free or already ours (never overwriting a real cluster's
# file); otherwise export SLURM_CONF as `env` prints.
set -euo pipefail

STATE=${FINESCALE_SLURM_STATE:-/tmp/finescale-slurm}
PARTITION=${FINESCALE_SLURM_PARTITION:-debug}
DB_PORT=${FINESCALE_SLURM_DB_PORT:-3306}
CONF=$STATE/etc/slurm.conf
MARKER="# finescale single-node test cluster (scripts/slurm-cluster.sh)"
NODE=$(hostname -s)

log() { echo "slurm-cluster: $*" >&2; }
die() { log "error: $*"; exit 1; }

need_root_and_packages() {
  [ "$(id -u)" = 0 ] || die "must run as root (the daemons switch users and bind privileged paths); current uid $(id -u)"
  local missing=()
  for cmd in munged slurmctld slurmd slurmdbd sbatch sinfo mariadbd mariadb-install-db; do
    command -v "$cmd" >/dev/null || [ -x "/usr/sbin/$cmd" ] || missing+=("$cmd")
  done
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]}; install with scripts/install-system-deps.sh"
}

# A pid is alive if /proc says so and it is not a zombie: PID 1 here reaps slowly, so a dead
# daemon can linger as a zombie and `kill -0` would still succeed.
alive() {
  local pid=$1
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
  local st
  st=$(sed -E 's/^[0-9]+ \(.*\) ([A-Za-z]).*/\1/' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ "$st" != Z ] && [ "$st" != X ]
}

pid_of() { [ -s "$1" ] && tr -dc '0-9' <"$1" || true; }

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
  local secs=$1 what=$2; shift 2
  local end=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $end ] || return 1
    sleep 0.2
  done
}

stop_pidfile() {  # stop_pidfile NAME PIDFILE
  local name=$1 pid
  pid=$(pid_of "$2")
  alive "$pid" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  local end=$((SECONDS + 20))
  while alive "$pid" && [ $SECONDS -lt $end ]; do sleep 0.1; done
  if alive "$pid"; then
    log "$name (pid $pid) ignored SIGTERM for 20 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
}

write_configs() {
  local cpus mem
  # The node line comes from the hardware as slurmd sees it; keep ~10 % memory for the OS.
  cpus=$(slurmd -C | sed -n 's/.*CPUs=\([0-9]*\).*/\1/p' | head -1)
  mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p' | head -1)
  mem=$((mem * 9 / 10))
  mkdir -p "$STATE"/{etc,ctld,spool,run,log}
  cat >"$CONF" <<EOF
$MARKER
ClusterName=finescale
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# Short credential lifetime, fast scheduling: a requeued job otherwise waits ~150 s.
AuthInfo=cred_expire=10
SchedulerParameters=bf_interval=1,sched_interval=2
# No cgroups in a container: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
# Cores and memory are consumable, with a default per CPU: a job without --mem would
# otherwise take the whole node and jobs would run one at a time.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=2048
# Accounting is what lets sacct (hence submitit) see cancelled, timed-out and killed jobs.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
JobCompType=jobcomp/none
ReturnToService=2
MailProg=/bin/true
KillWait=5
MinJobAge=300
JobRequeue=1
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/run/slurmctld.pid
SlurmdPidFile=$STATE/run/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$STATE/etc/slurmdbd.conf" <<EOF
$MARKER
AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
PidFile=$STATE/run/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$STATE/etc/slurmdbd.conf"
  # slurmd and the plugins look for plugstack.conf (and friends) beside slurm.conf.
  [ -e /etc/slurm/plugstack.conf ] && ln -sf /etc/slurm/plugstack.conf "$STATE/etc/plugstack.conf"
  mkdir -p /etc/slurm
  if [ ! -e /etc/slurm/slurm.conf ] || head -1 /etc/slurm/slurm.conf 2>/dev/null | grep -qF "$MARKER"; then
    ln -sfn "$CONF" /etc/slurm/slurm.conf
  else
    log "/etc/slurm/slurm.conf belongs to another cluster; clients need: export SLURM_CONF=$CONF"
  fi
}

start_munge() {
  install -d -o munge -g munge -m 0755 /run/munge
  install -d -o munge -g munge -m 0700 "$STATE/munge"
  [ -s /etc/munge/munge.key ] || { /usr/sbin/mungekey --create 2>/dev/null || /usr/sbin/create-munge-key -f; chown munge:munge /etc/munge/munge.key; }
  if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    log "munged already answers on /run/munge (reusing it)"
    return
  fi
  runuser -u munge -- /usr/sbin/munged --force --pid-file="$STATE/munge/munged.pid" \
    --log-file="$STATE/munge/munged.log"
  wait_for 20 munge sh -c 'munge -n | unmunge' || die "munged did not start; see $STATE/munge/munged.log"
}

start_mariadb() {
  local dir=$STATE/mysql
  install -d -o mysql -g mysql -m 0750 "$dir" "$dir/data" "$dir/run"
  mariadb-install-db --user=mysql --datadir="$dir/data" --auth-root-authentication-method=socket \
    --skip-test-db >"$STATE/log/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $STATE/log/mariadb-install.log"
  # setsid: MariaDB must not die with the shell that started it.
  setsid /usr/sbin/mariadbd --user=mysql --datadir="$dir/data" --socket="$dir/run/mysqld.sock" \
    --pid-file="$dir/run/mariadbd.pid" --bind-address=127.0.0.1 --port="$DB_PORT" \
    --log-error="$dir/mariadbd.err" --innodb-buffer-pool-size=64M --skip-name-resolve \
    </dev/null >/dev/null 2>&1 &
  wait_for 60 mariadb mariadb-admin --socket="$dir/run/mysqld.sock" ping \
    || die "MariaDB did not start; see $dir/mariadbd.err"
  mariadb --socket="$dir/run/mysqld.sock" -u root <<'SQL'
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL
}

start() {
  need_root_and_packages
  # Resolvable host name: gloo uses it as the master address.
  getent hosts "$NODE" >/dev/null || echo "127.0.0.1 $NODE" >>/etc/hosts
  if [ -d "$STATE" ]; then stop_daemons; fi
  rm -rf "$STATE"
  mkdir -p "$STATE"
  write_configs
  export SLURM_CONF=$CONF
  start_munge
  start_mariadb
  /usr/sbin/slurmdbd
  wait_for 60 slurmdbd sacctmgr -n list cluster || die "slurmdbd did not answer; see $STATE/log/slurmdbd.log"
  sacctmgr -i add cluster finescale >/dev/null 2>&1 || true
  /usr/sbin/slurmctld -i
  wait_for 60 slurmctld scontrol ping || die "slurmctld did not start; see $STATE/log/slurmctld.log"
  /usr/sbin/slurmd
  local end=$((SECONDS + 60))
  until [ "$(sinfo -h -o %t 2>/dev/null | head -1)" = idle ]; do
    [ $SECONDS -lt $end ] || die "node $NODE not idle after 60 s (sinfo: $(sinfo -h 2>&1)); see $STATE/log/slurmd.log"
    sleep 0.2
  done
  log "up: partition $PARTITION on $NODE; state in $STATE"
}

stop_daemons() {
  export SLURM_CONF=$CONF
  if alive "$(pid_of "$STATE/run/slurmctld.pid")"; then
    scancel --full -u root >/dev/null 2>&1 || scancel -u root >/dev/null 2>&1 || true
  fi
  stop_pidfile slurmd "$STATE/run/slurmd.pid"
  stop_pidfile slurmctld "$STATE/run/slurmctld.pid"
  stop_pidfile slurmdbd "$STATE/run/slurmdbd.pid"
  stop_pidfile mariadbd "$STATE/mysql/run/mariadbd.pid"
  stop_pidfile munged "$STATE/munge/munged.pid"
}

stop() {
  [ -d "$STATE" ] || { log "nothing to stop ($STATE does not exist)"; return 0; }
  stop_daemons
  log "stopped (state kept in $STATE until the next start)"
}

status() {
  local ok=0 name file pid
  for pair in munged:munge/munged.pid mariadbd:mysql/run/mariadbd.pid slurmdbd:run/slurmdbd.pid \
              slurmctld:run/slurmctld.pid slurmd:run/slurmd.pid; do
    name=${pair%%:*}; file=$STATE/${pair#*:}
    pid=$(pid_of "$file")
    if alive "$pid"; then echo "$name running (pid $pid)"; else echo "$name not running"; ok=1; fi
  done
  if [ $ok = 0 ]; then SLURM_CONF=$CONF sinfo; fi
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  env) echo "export SLURM_CONF=$CONF" ;;
  *) echo "usage: $0 start|stop|status|env" >&2; exit 2 ;;
esac
