#!/usr/bin/env bash
# Switch from Debian's Barman 3.4 to the barman-ts Debian package and back, on a real catalog:
#
#   bash .ci/deb-switch-test.sh [--deb FILE]        (root; run by .ci/run after `npm test`)
#
# The host's root file system is never changed: everything happens in a copy-on-write view of
# it (overlayfs, lower = /, upper = a tmpfs) inside private mount, PID and network namespaces,
# chrooted. When the script ends, for any reason, the namespaces die and every change with them:
# the host's /usr/bin/barman (Debian's Barman, the peer of the other tests) is untouched, and no
# process of the test survives. Inside:
#   1. Debian's Barman 3.4 (as installed on the host) with a PostgreSQL 15 cluster archiving
#      into it (archive_command = cp into incoming), an edited /etc/barman.conf with an option
#      neither tool knows, a second server whose catalog has Barman 3.13's meta/ directory;
#      Barman takes backup 1.
#   2. While `barman cron` (Python) runs, installing barman-ts is refused: by the package's
#      check run beforehand and by `dpkg -i`, Barman's packages still installed and working;
#      by `apt-get install`, which removes them before the check runs (it says how to put them
#      back, and the test does).
#   3. `apt-get install ./barman-ts.deb`: Barman's packages are replaced; the catalog (every
#      file, size, mode, owner, mtime) and /etc/barman.conf are unchanged by the installation;
#      its messages name the unknown option and the newer layout; /etc/cron.d/barman,
#      logrotate, completion, man pages are barman-ts's.
#   4. barman-ts: check, list-backups (Barman's backup), backup 2, more WAL, recover + start.
#   5. `apt-get remove barman-ts` (catalog unchanged again), `apt-get install` Debian's barman,
#      barman-cli, barman-cli-cloud: Barman 3.4 checks, lists both backups and recovers each one
#      (PostgreSQL started on it, rows counted, WAL archived by barman-ts replayed).
# Needs: unshare, overlayfs, chroot, perl; Debian's barman 3.4 installed on the host (.ci/run's
# peers section) with its .debs in apt's cache or downloadable; PostgreSQL 15; nodejs >= 20 as a
# Debian package (the .deb depends on it).
set -euo pipefail

MODE=host
if [[ ${1:-} == --in-namespace || ${1:-} == --in-chroot ]]; then MODE=${1#--in-}; shift; fi

# ------------------------------------------------------------------------------------------
if [[ $MODE == host ]]; then
  REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  DEB=
  while (($# > 0)); do
    case $1 in
      --deb) DEB=$(realpath "$2"); shift 2 ;;
      *) echo "deb-switch-test: unknown argument '$1'" >&2; exit 2 ;;
    esac
  done
  [[ $(id -u) -eq 0 ]] || { echo "deb-switch-test: must run as root" >&2; exit 1; }
  for tool in unshare chroot dpkg-deb perl; do
    command -v "$tool" > /dev/null || { echo "deb-switch-test: $tool is required" >&2; exit 1; }
  done
  node_pkg=$(dpkg-query -W -f='${Version}' nodejs 2> /dev/null || true)
  if [[ -z $node_pkg ]] || ! dpkg --compare-versions "$node_pkg" ge 20; then
    echo "deb-switch-test: nodejs >= 20 must be installed as a Debian package (found '${node_pkg:-none}'): the .deb depends on it" >&2
    exit 1
  fi
  WORK=$(mktemp -d /var/tmp/barman-ts-switch.XXXXXX)
  # Safety net, on success or failure: the host's Barman packages must be as they were. They
  # cannot have changed (every package operation happens in the namespaces' overlay); if they
  # ever did, they are put back from the .debs gathered below.
  restore_host_barman() {
    local missing=() p
    for p in barman barman-cli barman-cli-cloud; do
      [[ $(dpkg-query -W -f='${Status}' "$p" 2> /dev/null) == "install ok installed" ]] || missing+=("$p")
    done
    if ((${#missing[@]} > 0)); then
      echo "deb-switch-test: the host's ${missing[*]} changed: reinstalling Debian's packages" >&2
      apt-get install -y -q -o Dpkg::Options::=--force-confold "$WORK"/debs/barman_*.deb "$WORK"/debs/barman-cli_*.deb "$WORK"/debs/barman-cli-cloud_*.deb >&2 || true
    fi
    rm -rf "$WORK"
  }
  trap restore_host_barman EXIT
  mkdir "$WORK/debs"
  if [[ -z $DEB ]]; then
    echo "---- building the Debian package"
    DEB=$(bash "$REPO/scripts/build-deb.sh" -Z gzip -o "$WORK")
  fi
  cp "$DEB" "$WORK/debs/barman-ts.deb"
  # Debian's barman packages, to switch back to: apt's cache, else downloaded (apt-get download
  # writes into the current directory).
  for pkg in barman barman-cli barman-cli-cloud; do
    ver=$(dpkg-query -W -f='${Version}' "$pkg")
    cached=$(ls /var/cache/apt/archives/"${pkg}_${ver#*:}"_*.deb 2> /dev/null | head -1 || true)
    if [[ -n $cached ]]; then cp "$cached" "$WORK/debs/"; else (cd "$WORK/debs" && apt-get download -q "$pkg=$ver"); fi
  done
  cp "${BASH_SOURCE[0]}" "$WORK/switch-test.sh"
  echo "---- entering private mount, PID and network namespaces (host root untouched)"
  unshare --mount --pid --fork --net --propagation private -- bash "$WORK/switch-test.sh" --in-namespace "$WORK"
  # The proof that the host was not touched: its barman is still Debian's.
  [[ $(dpkg-query -W -f='${Status}' barman) == "install ok installed" ]] || { echo "deb-switch-test: host's barman package changed" >&2; exit 1; }
  grep -q python <<< "$(head -1 /usr/bin/barman)" || { echo "deb-switch-test: host's /usr/bin/barman changed" >&2; exit 1; }
  echo "deb-switch-test: PASSED (host's barman untouched: $(dpkg-query -W -f='${Package} ${Version}' barman))"
  exit 0
fi

# ------------------------------------------------------------------------------------------
if [[ $MODE == namespace ]]; then
  WORK=$1
  NS=$WORK/ns
  mkdir "$NS"
  mount -t tmpfs -o size=3g,mode=0700 tmpfs "$NS"
  mkdir "$NS/upper" "$NS/work" "$NS/root"
  # lower = the host's root file system as it is on disk (without the mounts above it): the
  # chroot sees the host's packages, and every change it makes lands in the tmpfs.
  mount -t overlay overlay -o "lowerdir=/,upperdir=$NS/upper,workdir=$NS/work" "$NS/root"
  R=$NS/root
  mount -t proc proc "$R/proc"
  mount --rbind /dev "$R/dev"
  mount --rbind /sys "$R/sys"
  # Empty run, tmp, catalog and logs: nothing of the host's (or its tests') state leaks in.
  for d in run var/lib/barman var/log/barman; do mount -t tmpfs -o mode=0755 tmpfs "$R/$d"; done
  mount -t tmpfs -o mode=1777 tmpfs "$R/tmp"
  mkdir -p "$R/run/lock" "$R/root/switch"
  cp -a "$WORK/debs" "$WORK/switch-test.sh" "$R/root/switch/"
  # PostgreSQL listens on a Unix socket only (listen_addresses = ''): no need for lo.
  exec chroot "$R" bash /root/switch/switch-test.sh --in-chroot
fi

# ------------------------------------------------------------------------------------------
# In the chroot: a private copy-on-write root, where this test may install and remove packages.
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 LC_ALL=C.UTF-8
export DEBIAN_FRONTEND=noninteractive HOME=/root
PGBIN=/usr/lib/postgresql/15/bin
DEBS=/root/switch/debs
T0=$(date +%s)
step() { printf '\n---- [%3ss] %s\n' "$(($(date +%s) - T0))" "$*"; }
fail() {
  echo "deb-switch-test: FAILED: $*" >&2
  echo "---- last lines of /var/log/barman/barman.log:" >&2
  tail -n 15 /var/log/barman/barman.log >&2 2> /dev/null || true
  exit 1
}
as_barman() { runuser -u barman -- env HOME=/var/lib/barman "$@"; }
psql_() { "$PGBIN/psql" -X -q -A -t -h /tmp -p "$1" -U postgres -d postgres -c "$2"; }
# As README's runbook says for unattended installations: keep every edited configuration file
# (interactively, dpkg asks, and its default is to keep it too).
apt_() { apt-get -q -y -o Dpkg::Use-Pty=0 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "$@"; }
# The catalog as a list: every path with its type, size, mode, owner, mtime, and the content's
# checksum for files. Compared before and after each package operation.
catalog_state() { (cd /var/lib/barman && find . -printf '%p %y %s %m %u:%g %T@\n' | sort && find . -type f -print0 | sort -z | xargs -0 -r md5sum); }
wait_archived() { # wait_archived SERVER: switch WAL and let archive-wal store it
  local before n
  before=$(find /var/lib/barman/"$1"/wals -type f | wc -l)
  # A commit record first: a switch right after another one (a backup's) makes no new segment.
  psql_ 5432 'SELECT txid_current()' > /dev/null
  psql_ 5432 'SELECT pg_switch_wal()' > /dev/null
  for _ in $(seq 1 120); do
    [[ -n $(ls -A /var/lib/barman/"$1"/incoming) ]] && break
    sleep 0.5
  done
  as_barman barman archive-wal "$1" > /dev/null
  n=$(find /var/lib/barman/"$1"/wals -type f | wc -l)
  ((n > before)) || fail "no WAL archived for $1"
}
recover_and_count() { # recover_and_count BACKUP_ID DIR PORT: recovered rows of table t
  as_barman barman recover switch "$1" "$2" > "/tmp/recover-$1.out" 2>&1 || { cat "/tmp/recover-$1.out"; fail "recover $1 into $2"; }
  echo "port = $3" >> "$2/postgresql.auto.conf"
  echo "listen_addresses = ''" >> "$2/postgresql.auto.conf"
  echo "archive_mode = off" >> "$2/postgresql.auto.conf"
  as_barman "$PGBIN/pg_ctl" -D "$2" -l "$2.log" -w -t 120 -o "-k /tmp" start > /dev/null || { tail -20 "$2.log"; fail "recovered $1 does not start"; }
  local rows
  rows=$(psql_ "$3" 'SELECT count(*) FROM t')
  as_barman "$PGBIN/pg_ctl" -D "$2" -m fast -w stop > /dev/null
  echo "$rows"
}

step "Debian's Barman as installed on the host"
[[ $(dpkg-query -W -f='${Version}' barman) == 3.4* ]] || fail "Debian's barman 3.4 is not installed"
grep -q python <<< "$(head -1 /usr/bin/barman)" || fail "/usr/bin/barman is not Debian's Barman"
echo 'man-db man-db/auto-update boolean false' | debconf-set-selections
chown barman:barman /var/lib/barman /var/log/barman
chmod 750 /var/lib/barman /var/log/barman
rm -f /etc/barman.d/*.conf
# CI removes Debian's cron file on the host (no Python barman cron there): a real installation
# has it. (No cron daemon runs in here.)
[[ -f /etc/cron.d/barman ]] || dpkg-deb --fsys-tarfile "$DEBS"/barman_*.deb | tar -xO ./etc/cron.d/barman > /etc/cron.d/barman
{
  echo
  echo '; edited by the DBA: must survive both package changes'
  echo 'barman_ts_switch_probe = 1'
} >> /etc/barman.conf
cat > /etc/barman.d/switch.conf << 'EOF'
[switch]
description = "switch test"
conninfo = host=/tmp port=5432 user=postgres dbname=postgres
streaming_conninfo = host=/tmp port=5432 user=postgres
backup_method = postgres
archiver = on
EOF
# A server whose catalog has Barman 3.13's layout: the installation must point it out.
cat > /etc/barman.d/newer.conf << 'EOF'
[newer]
description = "catalog of Barman 3.13"
conninfo = host=/tmp port=5999 user=postgres dbname=postgres
backup_method = postgres
streaming_conninfo = host=/tmp port=5999 user=postgres
archiver = on
active = false
EOF
install -d -o barman -g barman -m 0700 /var/lib/barman/newer /var/lib/barman/newer/meta
CONF_MD5=$(md5sum /etc/barman.conf /etc/barman.d/switch.conf)

step "PostgreSQL 15 (run by barman) archiving with cp into Barman's incoming directory"
as_barman "$PGBIN/initdb" -D /tmp/pg -U postgres -A trust > /dev/null
as_barman barman check switch > /dev/null || true # creates the server's directories (no WAL yet: FAILED)
[[ -d /var/lib/barman/switch/incoming ]] || fail "barman cron did not create the catalog"
cat >> /tmp/pg/postgresql.auto.conf << 'EOF'
listen_addresses = ''
archive_mode = on
archive_command = 'test ! -f /var/lib/barman/switch/incoming/%f && cp %p /var/lib/barman/switch/incoming/%f'
wal_level = replica
EOF
as_barman "$PGBIN/pg_ctl" -D /tmp/pg -l /tmp/pg.log -w -o "-k /tmp -p 5432" start > /dev/null
psql_ 5432 'CREATE TABLE t (i int, who text); INSERT INTO t SELECT g, $$barman$$ FROM generate_series(1, 1000) g'
wait_archived switch

step "Barman 3.4: backup 1"
as_barman barman backup switch
wait_archived switch
as_barman barman check switch || fail "Barman's check before the switch"
B1=$(as_barman barman list-backups --minimal switch | head -1)
[[ -n $B1 ]] || fail "no backup listed by Barman"
psql_ 5432 'INSERT INTO t SELECT g, $$after backup 1$$ FROM generate_series(1001, 2000) g'
wait_archived switch
as_barman barman list-backups switch

step "installing barman-ts while Barman's 'barman cron' runs is refused"
BEFORE=$(catalog_state)
REFUSED='installation refused; the catalog and the configuration were not changed'
barman_intact() { # barman_intact WHAT: Debian's Barman installed and working, catalog unchanged
  local p
  for p in barman barman-cli barman-cli-cloud; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2> /dev/null) == "install ok installed" ]] || fail "$1: $p is not installed any more"
  done
  [[ $(dpkg-query -W -f='${Status}' barman-ts 2> /dev/null) != "install ok installed" ]] || fail "$1: barman-ts installed anyway"
  [[ $(catalog_state) == "$BEFORE" ]] || fail "$1: the refused installation changed the catalog"
  grep -q python <<< "$(head -1 /usr/bin/barman)" || fail "$1: /usr/bin/barman is not Barman's"
  grep -q "$B1" <<< "$(as_barman barman list-backups switch)" || fail "$1: Barman does not list backup 1"
  BEFORE=$(catalog_state)
}
perl -e '$0 = "/usr/bin/python3 /usr/bin/barman cron"; sleep 600' &
FAKE=$!
sleep 0.5
# The package's own check, as README says to run it before apt: it only reads.
if dpkg-deb -I "$DEBS/barman-ts.deb" preinst | sh -s install > /tmp/check.out 2>&1; then cat /tmp/check.out; fail "the check accepts while barman cron runs"; fi
grep -q "$REFUSED" /tmp/check.out || { cat /tmp/check.out; fail "no clear refusal from the check"; }
barman_intact "the check"
# dpkg -i: the preinst runs before dpkg removes the conflicting packages.
if dpkg -i "$DEBS/barman-ts.deb" > /tmp/refused-dpkg.out 2>&1; then cat /tmp/refused-dpkg.out; fail "dpkg -i accepted while barman cron runs"; fi
grep -q "$REFUSED" /tmp/refused-dpkg.out || { cat /tmp/refused-dpkg.out; fail "no clear refusal message from dpkg -i"; }
grep -q "Debian's barman barman-cli barman-cli-cloud stay installed, unchanged" /tmp/refused-dpkg.out || { cat /tmp/refused-dpkg.out; fail "dpkg -i's refusal does not say Barman stays"; }
grep 'barman-ts:' /tmp/refused-dpkg.out | tail -3
barman_intact "dpkg -i"
# apt: it removes the conflicting packages in a dpkg run of its own, before the preinst runs.
if apt_ install "$DEBS/barman-ts.deb" > /tmp/refused.out 2>&1; then cat /tmp/refused.out; fail "installation accepted while barman cron runs"; fi
kill "$FAKE"
grep -q "$REFUSED" /tmp/refused.out || { cat /tmp/refused.out; fail "no clear refusal message"; }
grep -E '^(Removing|Preparing to unpack)' /tmp/refused.out # apt's actions, in order
grep 'barman-ts:' /tmp/refused.out | tail -6
[[ $(dpkg-query -W -f='${Status}' barman-ts 2> /dev/null) != "install ok installed" ]] || fail "barman-ts installed anyway"
[[ $(catalog_state) == "$BEFORE" ]] || fail "the refused installation changed the catalog"
if [[ $(dpkg-query -W -f='${Status}' barman 2> /dev/null) != "install ok installed" ]]; then
  grep -q "Debian's barman is removed, not purged" /tmp/refused.out || { cat /tmp/refused.out; fail "apt removed Barman and the refusal does not say how to put it back"; }
  echo "(apt removed Barman's packages before barman-ts's preinst refused: reinstalling them, as the message says)"
  apt_ install "$DEBS"/barman_*.deb "$DEBS"/barman-cli_*.deb "$DEBS"/barman-cli-cloud_*.deb > /tmp/putback.out 2>&1 || { cat /tmp/putback.out; fail "putting Barman back"; }
fi
barman_intact "apt-get install"

step "apt-get install ./barman-ts.deb over Barman"
BEFORE=$(catalog_state)
apt_ install "$DEBS/barman-ts.deb" 2>&1 | tee /tmp/install.out
[[ $(dpkg-query -W -f='${Status}' barman-ts) == "install ok installed" ]] || fail "barman-ts is not installed"
for p in barman barman-cli barman-cli-cloud; do
  [[ $(dpkg-query -W -f='${Status}' "$p" 2> /dev/null) != "install ok installed" ]] || fail "$p is still installed"
done
[[ $(catalog_state) == "$BEFORE" ]] || { diff <(echo "$BEFORE") <(catalog_state) | head; fail "the installation changed the catalog"; }
[[ $(md5sum /etc/barman.conf /etc/barman.d/switch.conf) == "$CONF_MD5" ]] || fail "the installation changed the configuration"
grep -q 'Invalid configuration option "barman_ts_switch_probe"' /tmp/install.out || fail "no message about the unknown option"
grep -q 'server newer: its catalog has the layout of Barman 3.13' /tmp/install.out || fail "no message about the newer catalog layout"
grep -q barman-ts <<< "$(barman -v)" || fail "/usr/bin/barman is not barman-ts"
for exe in barman-wal-archive barman-wal-restore barman-cloud-backup barman-cloud-wal-archive barman-agent; do
  [[ $(readlink -f "/usr/bin/$exe") == /usr/lib/barman-ts/* ]] || fail "/usr/bin/$exe is not barman-ts's"
  "$exe" --version > /dev/null 2>&1 || fail "$exe --version"
done
grep -q '^\* \* \* \* \* barman .*barman -q cron' /etc/cron.d/barman || fail "/etc/cron.d/barman"
[[ $(dpkg -S /etc/cron.d/barman /etc/logrotate.d/barman /usr/share/bash-completion/completions/barman | cut -d: -f1 | sort -u) == barman-ts ]] || fail "cron, logrotate and completion files are not barman-ts's"
[[ $(zcat /usr/share/man/man1/barman.1.gz) == *'barman\-ts'* ]] || fail "barman(1) is not barman-ts's"
[[ -f /usr/share/man/man5/barman.5.gz && -f /usr/share/man/man1/barman-cloud-backup.1.gz ]] || fail "man pages"
if command -v logrotate > /dev/null; then
  logrotate -d /etc/logrotate.d/barman > /tmp/logrotate.out 2>&1 || { cat /tmp/logrotate.out; fail "logrotate rejects /etc/logrotate.d/barman"; }
fi
stat -c '%U:%G %a %n' /var/lib/barman /var/log/barman

step "barman-ts on Barman's catalog: check, list-backups, backup 2, recovery"
as_barman barman check switch || fail "barman-ts check"
grep -q "$B1" <<< "$(as_barman barman list-backups switch)" || fail "barman-ts does not list Barman's backup"
as_barman barman backup switch
wait_archived switch
B2=$(as_barman barman list-backups --minimal switch | head -1)
[[ $B2 != "$B1" ]] || fail "barman-ts's backup is not listed"
psql_ 5432 'INSERT INTO t SELECT g, $$after backup 2$$ FROM generate_series(2001, 3000) g'
wait_archived switch
rows=$(recover_and_count "$B1" /tmp/rec-ts-b1 5433)
[[ $rows == 3000 ]] || fail "barman-ts's recovery of Barman's backup $B1 has $rows rows, 3000 expected"
echo "barman-ts recovered Barman's backup $B1: $rows rows"

step "apt-get remove barman-ts, then Debian's barman back"
as_barman barman list-backups switch
BEFORE=$(catalog_state)
apt_ remove barman-ts > /tmp/remove.out 2>&1 || { cat /tmp/remove.out; fail "apt-get remove barman-ts"; }
[[ $(catalog_state) == "$BEFORE" ]] || fail "the removal changed the catalog"
apt_ install "$DEBS"/barman_*.deb "$DEBS"/barman-cli_*.deb "$DEBS"/barman-cli-cloud_*.deb > /tmp/reinstall.out 2>&1 || { cat /tmp/reinstall.out; fail "reinstalling Debian's barman"; }
grep -q python <<< "$(head -1 /usr/bin/barman)" || fail "/usr/bin/barman is not Debian's Barman again"
[[ $(md5sum /etc/barman.conf /etc/barman.d/switch.conf) == "$CONF_MD5" ]] || fail "the configuration changed across the switch back"

step "Barman 3.4 after the switch back: check, list and recover every backup"
as_barman barman check switch || fail "Barman's check after the switch back"
as_barman barman list-backups switch
listed=$(as_barman barman list-backups --minimal switch | sort | tr '\n' ' ')
[[ $listed == "$(printf '%s\n' "$B1" "$B2" | sort | tr '\n' ' ')" ]] || fail "Barman lists '$listed', expected $B1 and $B2"
grep -q 'Status *: DONE' <<< "$(as_barman barman show-backup switch "$B2")" || fail "Barman does not see barman-ts's backup $B2 as DONE"
for b in "$B1" "$B2"; do
  rows=$(recover_and_count "$b" "/tmp/rec-barman-$b" 5434)
  [[ $rows == 3000 ]] || fail "Barman's recovery of $b has $rows rows, 3000 expected"
  echo "Barman recovered $b: $rows rows"
done
as_barman "$PGBIN/pg_ctl" -D /tmp/pg -m fast -w stop > /dev/null
step "switch and switch back: PASSED"
