#!/usr/bin/env bash
# Single-node SLURM (+ optional slurmdbd/MariaDB so sacct works) for CI. Root, no systemd.
# Usage: slurm-local.sh up|down      env: SLURM_DIR (state, default /tmp/slurm-ci), WITH_DBD=1|0
# Installs Debian's munge, slurmctld, slurmd,
# slurm-client (and slurmdbd + mariadb-server for accounting) with apt when missing, and
# declares one fake GPU (gres gpu:1 on /dev/null) so GPU requests (--gpus=1) schedule.
# Used by tests/cluster (see docs/cluster.md). `up` is idempotent; `down` stops every daemon.
set -euo pipefail
D=${SLURM_DIR:-/tmp/slurm-ci}; WITH_DBD=${WITH_DBD:-1}; HN=$(hostname -s)
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
waitfor() { for _ in $(seq 1 120); do eval "$1" >/dev/null 2>&1 && return 0; sleep 0.25; done; echo "timeout: $1" >&2; return 1; }
stop() { if alive "$1"; then local p; p=$(cat "$1"); kill "$p"; for _ in $(seq 1 80); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done; fi; rm -f "$1"; }

down() {  # take the state dir from the live config, so a different SLURM_DIR cannot orphan daemons
  D=$(sed -n 's#^StateSaveLocation=\(.*\)/ctld$#\1#p' /etc/slurm/slurm.conf 2>/dev/null | grep . || echo "$D")
  for f in $D/run/slurmd.pid $D/run/slurmctld.pid $D/run/slurmdbd.pid /run/mysqld/mariadb.pid /run/munge/munged.pid; do stop $f; done; rm -rf "$D"; }

up() {
  local pkgs="munge slurmctld slurmd slurm-client"; [ "$WITH_DBD" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
  if ! dpkg -s $pkgs >/dev/null 2>&1; then
    apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs >/dev/null
  fi
  getent hosts "$HN" >/dev/null || echo "127.0.0.1 $HN" >> /etc/hosts; mkdir -p $D/{ctld,spool,log,run} /run/munge /run/mysqld; chown munge:munge /run/munge
  [ -s /etc/munge/munge.key ] || { mungekey -c -f -k /etc/munge/munge.key; chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key; }
  alive /run/munge/munged.pid || runuser -u munge -- /usr/sbin/munged
  waitfor 'munge -n | unmunge'
  local acct="AccountingStorageType=accounting_storage/none"
  [ "$WITH_DBD" = 1 ] && acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu"
  cat > $D/slurm.conf <<EOF
ClusterName=localcluster
SlurmctldHost=$HN
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$D/ctld
SlurmdSpoolDir=$D/spool
SlurmctldPidFile=$D/run/slurmctld.pid
SlurmdPidFile=$D/run/slurmd.pid
SlurmctldLogFile=$D/log/slurmctld.log
SlurmdLogFile=$D/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
$acct
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MinJobAge=600
ReturnToService=2
MpiDefault=none
GresTypes=gpu
$(slurmd -C | head -1) Gres=gpu:1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
  echo "NodeName=$HN Name=gpu File=/dev/null" > /etc/slurm/gres.conf   # fake GPU
  if ! cmp -s $D/slurm.conf /etc/slurm/slurm.conf; then   # config changed: full restart, not reconfigure
    stop $D/run/slurmd.pid; stop $D/run/slurmctld.pid; cp $D/slurm.conf /etc/slurm/slurm.conf; fi
  if [ "$WITH_DBD" = 1 ]; then
    chown mysql:mysql /run/mysqld; if [ ! -d $D/mysql ]; then mkdir -p $D/mysql; chown mysql:mysql $D/mysql
      mariadb-install-db --user=mysql --datadir=$D/mysql --auth-root-authentication-method=socket --skip-test-db >$D/log/mariadb-install.log 2>&1; fi
    alive /run/mysqld/mariadb.pid || { setsid nohup mariadbd --user=mysql --datadir=$D/mysql --socket=/run/mysqld/mysqld.sock \
      --bind-address=127.0.0.1 --pid-file=/run/mysqld/mariadb.pid --log-error=/run/mysqld/mariadb.err \
      --innodb-buffer-pool-size=64M </dev/null >/dev/null 2>&1 & }
    waitfor 'mariadb -e "select 1"'
    mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db; CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
      GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
    printf '%s\n' AuthType=auth/munge DbdHost=localhost SlurmUser=root LogFile=$D/log/slurmdbd.log PidFile=$D/run/slurmdbd.pid \
      StorageType=accounting_storage/mysql StorageHost=localhost StorageUser=slurm StoragePass=slurm StorageLoc=slurm_acct_db > /etc/slurm/slurmdbd.conf
    chmod 600 /etc/slurm/slurmdbd.conf
    alive $D/run/slurmdbd.pid || slurmdbd
    waitfor 'sacctmgr -n list cluster'
    sacctmgr -n list cluster format=cluster%40 | grep -qw localcluster || sacctmgr -i add cluster localcluster >/dev/null
  fi
  alive $D/run/slurmctld.pid || slurmctld
  alive $D/run/slurmd.pid || slurmd
  waitfor 'sinfo -h -o %T | grep -Eq "^(idle|mixed|allocated)"'
  waitfor 'srun -t 1 true'
  echo "SLURM ready on $HN (state in $D, WITH_DBD=$WITH_DBD)"
}

case "${1:-up}" in up) up ;; down) down ;; *) echo "usage: $0 up|down" >&2; exit 2 ;; esac
