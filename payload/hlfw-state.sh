# shellcheck shell=sh
# hlfw-state.sh - sourced by hlfw (never run on its own).
# The state file, the history and `hlfw status`: what the host believes it runs
# (none|pending|active|rolled-back) and what happened before.

# state_get KEY: the value of the last KEY= line of the state file (nothing when there is none).
# A read loop, not sed | tail: apply asks several times, and every process costs.
state_get() {
    [ -f "$STATE_DIR/state" ] || return 0
    _sg_found=
    while IFS= read -r _sg_line || [ -n "$_sg_line" ]; do
        case $_sg_line in "$1="*) _sg_found=1; _sg_value=${_sg_line#"$1="} ;; esac
    done <"$STATE_DIR/state"
    [ -z "$_sg_found" ] || printf '%s\n' "$_sg_value"
}

# state_update KEY=VALUE... : rewrite the state file atomically (temp + mv).
state_update() {
    _su_state_tmp="$STATE_DIR/.state.$$"
    if ! {
        if [ -f "$STATE_DIR/state" ]; then cat "$STATE_DIR/state"; fi
        for _su_kv in "$@" "changed_at=$(now)"; do printf '%s\n' "$_su_kv"; done
    } | awk '{
            key = $0; sub(/=.*/, "", key)
            if (!(key in value)) order[n++] = key
            value[key] = substr($0, length(key) + 2)
        }
        END { for (i = 0; i < n; i++) print order[i] "=" value[order[i]] }' >"$_su_state_tmp"; then
        rm -f "$_su_state_tmp"
        die "$EXIT_FAILED" "cannot write $STATE_DIR/state (disk full?)"
    fi
    mv -f "$_su_state_tmp" "$STATE_DIR/state" ||
        die "$EXIT_FAILED" "cannot replace $STATE_DIR/state"
}

history_add() {
    printf '%s %s %s timeout=%s reason=%s\n' "$(now)" "$1" "$2" "${3:-}" "${4:-}" \
        >>"$STATE_DIR/history" 2>/dev/null || warn "cannot append to $STATE_DIR/history"
}

history_last() {
    if [ -f "$STATE_DIR/history" ]; then
        awk -v h="$1" '$2 == h { last = $0 } END { if (last != "") print last }' "$STATE_DIR/history"
    fi
}

valid_hash() {
    case $1 in
        '' | *[!A-Za-z0-9._-]* | .*) return 1 ;;
    esac
    [ "${#1}" -le 128 ]
}

# release_argument COMMAND ARGS...: sets RELEASE_ARGUMENT from `hlfw COMMAND --release HASH`.
release_argument() {
    if [ $# -ne 3 ] || [ "$2" != --release ]; then
        usage_error "usage: hlfw $1 --release HASH"
    fi
    require_hash "$3"
    RELEASE_ARGUMENT=$3
}

require_hash() {
    valid_hash "$1" || usage_error "'$1' is not a release hash (letters, digits, '.', '_', '-')"
}

boot_id() {
    cat /proc/sys/kernel/random/boot_id 2>/dev/null || printf 'unknown'
}

# After a reboot the pending release is no longer live: the boot loaded the
# persisted (last confirmed) files and the timer or sleeper died with the host.
pending_lost_in_reboot() {
    [ "$(state_get boot_id)" != "$(boot_id)" ]
}

mark_lost_in_reboot() {
    state_update state=rolled-back "release=$1" "reason=the host rebooted before it was confirmed; the boot loaded the last confirmed rules" \
        rolled_back_at="$(now)" deadline= rollback_handle=
    history_add "$1" rolled-back "$(state_get timeout)" "the host rebooted before it was confirmed"
    log "pending release $1 was lost in a reboot; the boot loaded the last confirmed rules"
}

cmd_status() {
    _status_json=
    case $# in
        0) ;;
        1) [ "$1" = --json ] || usage_error "usage: hlfw status [--json]"; _status_json=1 ;;
        *) usage_error "usage: hlfw status [--json]" ;;
    esac
    _status_state=$(state_get state)
    _status_state=${_status_state:-none}
    _status_deadline=$(state_get deadline)
    _status_left=
    if [ "$_status_state" = pending ] && [ -n "$_status_deadline" ]; then
        _status_left=$((_status_deadline - $(now)))
        [ "$_status_left" -ge 0 ] || _status_left=0
    fi
    if [ -z "$_status_json" ]; then
        for _status_key in state release deadline previous persisted_release; do
            if [ "$_status_key" = state ]; then _status_value=$_status_state; else _status_value=$(state_get "$_status_key"); fi
            printf '%s=%s\n' "$_status_key" "$_status_value"
        done
        printf 'timeout=%s\nseconds_left=%s\nactive_release=%s\nrollback_method=%s\nreason=%s\n' \
            "$(state_get timeout)" "$_status_left" "$(state_get active_release)" \
            "$(state_get rollback_method)" "$(state_get reason)"
        return 0
    fi
    printf '{"state": %s, "release": %s, "deadline": %s, "previous": %s, "persisted_release": %s, "timeout": %s, "seconds_left": %s, "active_release": %s, "rollback_method": %s, "reason": %s}\n' \
        "$(json_string "$_status_state")" "$(json_string "$(state_get release)")" "$(json_number "$_status_deadline")" \
        "$(json_string "$(state_get previous)")" "$(json_string "$(state_get persisted_release)")" \
        "$(json_number "$(state_get timeout)")" "$(json_number "$_status_left")" \
        "$(json_string "$(state_get active_release)")" "$(json_string "$(state_get rollback_method)")" \
        "$(json_string "$(state_get reason)")"
}

json_string() {
    if [ -z "$1" ]; then
        printf 'null'
    else
        printf '"%s"' "$(printf '%s' "$1" | sed 's/\\/\\\\/g; s/"/\\"/g')"
    fi
}

json_number() {
    case $1 in
        '' | *[!0-9-]*) printf 'null' ;;
        *) printf '%s' "$1" ;;
    esac
}
