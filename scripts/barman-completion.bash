# bash completion for barman (barman-ts).
#
# Install:  cp scripts/barman-completion.bash /etc/bash_completion.d/barman
#      or:  source /path/to/barman-completion.bash   (in ~/.bashrc)
#
# Completes subcommands, global options, each subcommand's options, server names
# (`barman list-servers --minimal`) and backup IDs (`barman list-backups --minimal SRV`).
# Subcommands and options are read from `barman --help` / `barman CMD --help`, so the
# completion never drifts from the installed version; the answers are cached per shell.

# Global options that take a value (their value is not a positional argument).
_barman_global_with_value=" -c --config -f --format --log-level --color --colour "

# Commands whose 2nd positional argument is a backup ID.
_barman_backup_id_commands=" check-backup delete drill generate-manifest keep list-files restore recover show-backup show-backups sync-backup verify-backup verify "

# Commands that take no server argument.
_barman_no_server_commands=" config-update cron diagnose list-servers list-server lock-directory-cleanup help "

declare -gA _barman_cache 2>/dev/null || declare -A _barman_cache

# Run barman as the user typed it (path and -c CONFIG included), without prompting or colour.
_barman_run() {
    local -a cmd=("${_barman_prog}")
    [[ -n ${_barman_conf} ]] && cmd+=(-c "${_barman_conf}")
    "${cmd[@]}" --color never "$@" 2>/dev/null
}

# `barman --help` lists commands as "  name|alias  description".
_barman_commands() {
    if [[ -z ${_barman_cache[commands]} ]]; then
        _barman_cache[commands]=$("${_barman_prog}" --help 2>/dev/null | awk '
            /^Commands:/ { on = 1; next }
            on && /^  [a-z]/ { split($1, names, "|"); for (i in names) if (names[i] != "help") print names[i] }
            /^$/ { if (on) on = 0 }')
    fi
    printf '%s\n' "${_barman_cache[commands]}"
}

# Options of `barman [CMD] --help`: "  -o, --output <file>  ..." → -o --output (and the ones with a
# value, prefixed by "=", for the positional count).
_barman_options() {
    local sub=$1 key="opts:$1"
    if [[ -z ${_barman_cache[$key]} ]]; then
        local -a help_cmd=("${_barman_prog}")
        [[ -n $sub ]] && help_cmd+=("$sub")
        _barman_cache[$key]=$("${help_cmd[@]}" --help 2>/dev/null | awk '
            /^Options:/ { on = 1; next }
            /^[A-Z][a-z]*:/ { on = 0 }
            on && /^  -/ {
                line = $0; sub(/^  /, "", line); sub(/  .*/, "", line)
                value = (line ~ /[<[]/)
                n = split(line, parts, /[ ,]+/)
                for (i = 1; i <= n; i++) if (parts[i] ~ /^-/) print (value ? "=" : "") parts[i]
            }')
    fi
    printf '%s\n' "${_barman_cache[$key]}"
}

_barman() {
    local cur=${COMP_WORDS[COMP_CWORD]}
    local prev=""
    ((COMP_CWORD > 0)) && prev=${COMP_WORDS[COMP_CWORD - 1]}
    _barman_prog=${COMP_WORDS[0]}
    _barman_conf=""
    COMPREPLY=()

    # Find the subcommand and the positional arguments typed so far.
    local i w sub="" subi=0
    local -a positional=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ -z $sub ]]; then
            if [[ $w == -c || $w == --config ]]; then
                _barman_conf=${COMP_WORDS[i + 1]}
                ((i++))
            elif [[ $_barman_global_with_value == *" $w "* ]]; then
                ((i++))
            elif [[ $w != -* ]]; then
                sub=$w
                subi=$i
            fi
        fi
    done

    # Values of global options.
    case $prev in
        -c | --config)
            COMPREPLY=($(compgen -f -- "$cur"))
            return 0
            ;;
        -f | --format)
            COMPREPLY=($(compgen -W "console json" -- "$cur"))
            return 0
            ;;
        --color | --colour)
            COMPREPLY=($(compgen -W "never always auto" -- "$cur"))
            return 0
            ;;
        --log-level)
            COMPREPLY=($(compgen -W "NOTSET DEBUG INFO WARNING ERROR CRITICAL" -- "$cur"))
            return 0
            ;;
    esac

    if [[ -z $sub ]]; then
        if [[ $cur == -* ]]; then
            COMPREPLY=($(compgen -W "$(_barman_options "" | sed 's/^=//')" -- "$cur"))
        else
            COMPREPLY=($(compgen -W "$(_barman_commands)" -- "$cur"))
        fi
        return 0
    fi

    local opts
    opts=$(_barman_options "$sub")
    if [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "$(sed 's/^=//' <<<"$opts")" -- "$cur"))
        return 0
    fi
    # The value of a subcommand option: a file name is the most useful guess.
    if [[ $prev == -* ]] && grep -qx -- "=$prev" <<<"$opts"; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return 0
    fi

    for ((i = subi + 1; i < COMP_CWORD; i++)); do
        w=${COMP_WORDS[i]}
        if [[ $w == -* ]]; then
            grep -qx -- "=$w" <<<"$opts" && ((i++))
            continue
        fi
        positional+=("$w")
    done

    [[ $_barman_no_server_commands == *" $sub "* ]] && return 0
    if ((${#positional[@]} == 0)) || [[ $_barman_backup_id_commands != *" $sub "* ]]; then
        # Servers (and 'all' for the commands that take several).
        local servers
        servers=$(_barman_run list-servers --minimal)
        [[ $_barman_backup_id_commands != *" $sub "* ]] && servers+=$'\nall'
        COMPREPLY=($(compgen -W "$servers" -- "$cur"))
    elif ((${#positional[@]} == 1)); then
        local ids
        ids=$(_barman_run list-backups --minimal "${positional[0]}")
        COMPREPLY=($(compgen -W "$ids latest last oldest first last-failed latest-full last-full" -- "$cur"))
    elif [[ $sub == restore || $sub == recover ]] && ((${#positional[@]} == 2)); then
        COMPREPLY=($(compgen -d -- "$cur"))
    fi
    return 0
}

complete -F _barman barman
