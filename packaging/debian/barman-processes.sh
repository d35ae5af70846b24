# Shared by the maintainer scripts (inserted by scripts/build-deb.sh where #BARMAN_PROCESSES#
# stands). POSIX sh.
#
# barman_processes: one line per running `barman` command, "PID TOOL: COMMAND LINE", TOOL being
# "Barman" (Python) or "barman-ts" (Node). Client tools (barman-wal-archive, barman-cloud-*) are
# not listed: PostgreSQL runs them, and they do not touch this host's catalog.
barman_processes() {
    for d in /proc/[0-9]*; do
        pid=${d#/proc/}
        [ "$pid" = "$$" ] && continue
        # (the braces: a process that ended since the glob makes the redirection itself fail)
        cmd=$({ tr '\0' ' ' < "$d/cmdline"; } 2>/dev/null) || continue
        [ -n "$cmd" ] || continue
        set -f
        # shellcheck disable=SC2086 # splitting the command line into words is the point
        set -- $cmd
        set +f
        a0=${1##*/}
        a1=${2:-}
        a1=${a1##*/}
        case $a0 in
            python3*|python) [ "$a1" = barman ] || continue; tool=Barman ;;
            node|nodejs) case $a1 in barman|barman.js) tool=barman-ts ;; *) continue ;; esac ;;
            barman) tool=barman ;;
            *) continue ;;
        esac
        echo "  $pid $tool: $cmd"
    done
}
