#!/usr/bin/env bash
# Build the Debian package of barman-ts from this checkout, without network:
#
#   scripts/build-deb.sh [-o OUTDIR] [--tarball FILE] [-Z xz|gzip|zstd|none]    (npm run deb)
#
# -Z: dpkg-deb's compression (default xz, level 6: 6.3 MB; gzip: 13.6 MB, but 1.8 s of CPU to
# build instead of 29 s, and 5 times quicker to unpack: the CI switch test uses it).
#
# 1. The npm package (`npm pack`: prepack compiles and writes the man pages), or FILE, unpacked
#    into /usr/lib/barman-ts: the package holds exactly what the npm package holds.
# 2. Its production dependencies: the checkout's node_modules (native modules already built for
#    this machine: zstd-napi, lz4-napi, ...), only those `npm ls --omit=dev` lists.
#    A smoke test loads every dependency and runs every executable's --version.
# 3. /usr/bin/<name> for every executable of package.json `bin`; man pages (gzipped);
#    bash completion; /etc/barman.conf (commented, generated from the option table),
#    /etc/barman.d/*.conf-template, /etc/cron.d/barman, /etc/logrotate.d/barman as conffiles.
# 4. DEBIAN/control: Depends on nodejs (>= the `engines` minimum; pinned to this Node major
#    when a native module is not Node-API, whose ABI changes with each major), the packages
#    of the shared libraries the native modules link to, postgresql-client, rsync, adduser;
#    Provides/Conflicts/Replaces the Debian packages whose executables it ships.
#
# Prints the path of the .deb. Needs: node, npm, dpkg-deb, ldd, gzip (no root: dpkg-deb
# --root-owner-group).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=$REPO/dist/deb
TARBALL=
COMPRESS=xz
while (($# > 0)); do
  case $1 in
    -Z) COMPRESS=$2; shift 2 ;;
    -o) OUT=$2; shift 2 ;;
    --tarball) TARBALL=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,23p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-deb.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
die() { echo "build-deb.sh: $*" >&2; exit 1; }
for tool in node npm dpkg-deb dpkg ldd gzip; do
  command -v "$tool" > /dev/null || die "$tool is required"
done
[[ -d $REPO/node_modules ]] || die "no node_modules in $REPO: run 'npm ci' first"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/barman-ts-deb.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --- 1. the npm package ---------------------------------------------------------------------
if [[ -z $TARBALL ]]; then
  (cd "$REPO" && npm pack --silent --pack-destination "$WORK" > /dev/null)
  TARBALL=$(ls "$WORK"/*.tgz)
fi
mkdir "$WORK/package"
tar -xzf "$TARBALL" -C "$WORK/package" --strip-components=1 --no-same-owner

pkgjson() { node -e "const p=require(process.argv[1]); const v=($1); process.stdout.write(String(v ?? ''))" "$WORK/package/package.json"; }
VERSION=$(pkgjson 'p.version')
ARCH=$(dpkg --print-architecture)
ROOT=$WORK/root
LIB=$ROOT/usr/lib/barman-ts
mkdir -p "$LIB"
cp -a "$WORK/package/." "$LIB/"

# --- 2. production dependencies ---------------------------------------------------------------
# Only the production dependency tree (npm ls --omit=dev), copied from the checkout: nested
# directories of a copied package come with it.
# (npm ls exits non-zero on an extraneous package: the load test below is the judge.)
(cd "$REPO" && npm ls --omit=dev --all --parseable 2> /dev/null || true) | sed -n "s|^$REPO/||p" | grep '^node_modules/' | LC_ALL=C sort |
  awk 'BEGIN { last = "" } last == "" || index($0, last "/") != 1 { print; last = $0 }' > "$WORK/deps.txt"
(cd "$REPO" && tar -cf - -T "$WORK/deps.txt") | tar -xf - -C "$LIB"
rm -rf "$LIB/node_modules/.bin"
# Build by-products of native modules (object files) are not needed at run time.
find "$LIB/node_modules" -depth \( -path '*/build/Release/obj.target' -o -path '*/build/Release/.deps' \) -exec rm -rf {} +
find "$LIB/node_modules" -depth -type d -empty -delete

# Every dependency loads (native ones included), every executable answers --version.
(cd "$LIB" && node --input-type=module -e '
  import { readFileSync } from "node:fs";
  const deps = Object.keys(JSON.parse(readFileSync("package.json", "utf8")).dependencies ?? {});
  for (const d of deps) await import(d).catch((e) => { console.error(`dependency ${d} does not load: ${e.message}`); process.exit(1); });
') || die "the staged dependencies do not load"
mapfile -t BINS < <(node -e 'for (const [n, p] of Object.entries(require(process.argv[1]).bin)) console.log(`${n}\t${p}`)' "$LIB/package.json")
for entry in "${BINS[@]}"; do
  name=${entry%%$'\t'*}
  rel=${entry#*$'\t'}
  [[ -x $LIB/$rel ]] || die "executable $name ($rel) is missing or not executable in the package"
  "$LIB/$rel" --version > /dev/null 2>&1 || die "$name --version fails in the staged package"
done

# --- native modules: Node ABI and shared libraries --------------------------------------------
NODE_MIN=$(pkgjson 'p.engines?.node' | sed -n 's/^>= *\([0-9][0-9]*\).*/\1/p')
NODE_MIN=${NODE_MIN:-20}
NODE_DEP="nodejs (>= $NODE_MIN)"
declare -A LIBS=()
mapfile -t NATIVE < <(find "$LIB/node_modules" -name '*.node' -type f)
for mod in "${NATIVE[@]}"; do
  if ! grep -q napi_register_module_v1 "$mod"; then
    major=$(node -p 'process.versions.node.split(".")[0]')
    NODE_DEP="nodejs (>= $major), nodejs (<< $((major + 1)))"
    echo "build-deb.sh: ${mod#"$LIB"/} is not a Node-API module: the package needs Node $major" >&2
  fi
  while read -r libpath; do
    if [[ -n $libpath ]]; then LIBS[$libpath]=${mod#"$LIB"/}; fi
  done < <(ldd "$mod" | sed -n 's/.*=> \(\/[^ ]*\) .*/\1/p')
done
# Which package owns each library (one dpkg -S for all: it is slow on a big dpkg database).
# With merged /usr a library may be registered under /lib or /usr/lib, by its link or its file.
declare -A OWNER_OF=()
if ((${#LIBS[@]} > 0)); then
  candidates=()
  for l in "${!LIBS[@]}"; do candidates+=("$l" "$(realpath "$l")" "${l#/usr}" "/usr$l"); done
  while IFS= read -r line; do
    [[ $line == *': /'* ]] || continue
    pkg=${line%%: /*}
    OWNER_OF[/${line#*: /}]=${pkg%%:*}
  done < <(dpkg -S "${candidates[@]}" 2> /dev/null || true)
fi
declare -A LIBPKG=()
for l in "${!LIBS[@]}"; do
  owner=
  for cand in "$l" "$(realpath "$l")" "${l#/usr}" "/usr$l"; do
    owner=${OWNER_OF[$cand]:-}
    [[ -n $owner ]] && break
  done
  if [[ -z $owner ]]; then
    echo "build-deb.sh: warning: $l (needed by ${LIBS[$l]}) belongs to no package" >&2
    continue
  fi
  # The upstream part of the installed version: no newer Debian revision is required.
  version=$(dpkg-query -W -f='${Version}' "$owner")
  version=${version#*:}
  LIBPKG[$owner]=${version%%-*}
done
LIB_DEPS=
for p in $(printf '%s\n' "${!LIBPKG[@]}" | sort); do LIB_DEPS+=", $p (>= ${LIBPKG[$p]})"; done
if ((${#NATIVE[@]} > 0)); then DEB_ARCH=$ARCH; else DEB_ARCH=all; fi

# --- 3. files outside /usr/lib/barman-ts ------------------------------------------------------
mkdir -p "$ROOT/usr/bin"
declare -A SHIPPED=()
for entry in "${BINS[@]}"; do
  name=${entry%%$'\t'*}
  rel=${entry#*$'\t'}
  ln -s "../lib/barman-ts/${rel#./}" "$ROOT/usr/bin/$name"
  SHIPPED[$name]=1
done
for page in "$LIB"/dist/share/man/man*/*.[0-9]; do
  section=$(basename "$(dirname "$page")")
  install -d "$ROOT/usr/share/man/$section"
  gzip -9n < "$page" > "$ROOT/usr/share/man/$section/$(basename "$page").gz"
done
install -D -m 0644 "$LIB/scripts/barman-completion.bash" "$ROOT/usr/share/bash-completion/completions/barman"
install -D -m 0644 "$LIB/dist/share/barman.conf" "$ROOT/etc/barman.conf"
for t in "$LIB"/packaging/etc/barman.d/*.conf-template; do
  install -D -m 0644 "$t" "$ROOT/etc/barman.d/$(basename "$t")"
done
install -D -m 0644 "$REPO/packaging/debian/cron.d" "$ROOT/etc/cron.d/barman"
install -D -m 0644 "$REPO/packaging/debian/logrotate" "$ROOT/etc/logrotate.d/barman"
DOC=$ROOT/usr/share/doc/barman-ts
install -d "$DOC"
gzip -9n < "$LIB/README.md" > "$DOC/README.md.gz"
cat > "$DOC/copyright" << EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: barman-ts

Files: *
License: GPL-3.0-or-later
 On Debian systems, the complete text of the GNU General Public License version 3 can be
 found in /usr/share/common-licenses/GPL-3.

Files: usr/lib/barman-ts/node_modules/*
License: various
 The licence of each module is in its directory under /usr/lib/barman-ts/node_modules.
EOF

# Debian packages whose executables this package ships (facts from their file lists).
declare -A DEBIAN_EXECUTABLES=(
  [barman]="barman"
  [barman-cli]="barman-wal-archive barman-wal-restore"
  [barman-cli-cloud]="barman-cloud-backup barman-cloud-backup-delete barman-cloud-backup-keep barman-cloud-backup-list barman-cloud-backup-show barman-cloud-check-wal-archive barman-cloud-restore barman-cloud-wal-archive barman-cloud-wal-restore"
)
CONFLICTS=()
PROVIDES=()
for pkg in barman barman-cli barman-cli-cloud; do
  all=1
  any=0
  for exe in ${DEBIAN_EXECUTABLES[$pkg]}; do
    if [[ -n ${SHIPPED[$exe]:-} ]]; then any=1; else all=0; fi
  done
  # Any shared file: they cannot be installed together. Provides only for a complete substitute.
  # Conflicts, not Breaks: with either, apt removes these packages in a dpkg run of its own before
  # it unpacks barman-ts (so before the preinst's checks); `dpkg -i` with Conflicts+Replaces runs
  # the preinst first and removes them only once barman-ts is unpacked (a refusal leaves them
  # installed), whereas with Breaks it refuses unless given --auto-deconfigure.
  ((any)) && CONFLICTS+=("$pkg")
  ((any && all)) && PROVIDES+=("$pkg")
  if ((any && !all)); then echo "build-deb.sh: note: ships some of $pkg's executables, not all: Conflicts/Replaces it without Provides" >&2; fi
done
join() { local IFS=,; echo "$*" | sed 's/,/, /g'; }

# --- 4. control files ----------------------------------------------------------------------------
mkdir -p "$ROOT/DEBIAN"
for script in preinst postinst prerm postrm; do
  # The shared process finder replaces its placeholder line.
  awk -v lib="$REPO/packaging/debian/barman-processes.sh" '
    $0 == "#BARMAN_PROCESSES#" { while ((getline l < lib) > 0) print l; next } { print }' \
    "$REPO/packaging/debian/$script" > "$ROOT/DEBIAN/$script"
  chmod 0755 "$ROOT/DEBIAN/$script"
done
(cd "$ROOT" && find etc -type f | sed 's|^|/|' | sort) > "$ROOT/DEBIAN/conffiles"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -print0 | sed -z 's|^\./||' | sort -z | xargs -0 md5sum) > "$ROOT/DEBIAN/md5sums"
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
{
  echo "Package: barman-ts"
  echo "Version: $VERSION"
  echo "Architecture: $DEB_ARCH"
  echo "Maintainer: ${DEB_MAINTAINER:-barman-ts developers <barman-ts@localhost>}"
  echo "Installed-Size: $INSTALLED_SIZE"
  echo "Depends: $NODE_DEP, postgresql-client, rsync (>= 3.0.4), adduser$LIB_DEPS"
  echo "Recommends: openssh-client, openssh-server, bzip2, xz-utils, zstd, lz4"
  if ((${#PROVIDES[@]} > 0)); then echo "Provides: $(join "${PROVIDES[@]}")"; fi
  if ((${#CONFLICTS[@]} > 0)); then
    echo "Conflicts: $(join "${CONFLICTS[@]}")"
    echo "Replaces: $(join "${CONFLICTS[@]}")"
  fi
  echo "Section: database"
  echo "Priority: optional"
  echo "Description: Backup and recovery manager for PostgreSQL (Barman-compatible, in TypeScript)"
  echo " barman-ts is a drop-in replacement for Barman: the same barman commands and options,"
  echo " the same /etc/barman.conf and barman.d, the same catalog in /var/lib/barman, so that"
  echo " backups taken by either tool can be listed, checked and recovered by the other."
  echo " It runs on Node.js."
} > "$ROOT/DEBIAN/control"

mkdir -p "$OUT"
DEB=$OUT/barman-ts_${VERSION}_${DEB_ARCH}.deb
case $COMPRESS in
  xz | gzip | zstd) LEVEL=(-z6) ;;
  none) LEVEL=() ;;
  *) die "unknown compression '$COMPRESS' (xz, gzip, zstd, none)" ;;
esac
dpkg-deb --root-owner-group "-Z$COMPRESS" "${LEVEL[@]}" --build "$ROOT" "$DEB" > /dev/null
echo "$DEB"
