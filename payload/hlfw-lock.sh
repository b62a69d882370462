# shellcheck shell=sh
# hlfw-lock.sh - sourced by hlfw (never run on its own).
# The lock: apply, confirm and rollback (including the timer's) never interleave.
# flock on STATE_DIR/lock, or a stale-pid-aware mkdir lock where flock is missing.

# apply, confirm and rollback (including the timer's) never interleave.

lock_owner() {
    cat "$STATE_DIR/lock.owner" 2>/dev/null || printf 'unknown'
}

lock_acquire() {
    _lock_lock_wait=${1:-$LOCK_WAIT_SECONDS}
    ensure_state_dir
    if [ "${HLFW_LOCK_METHOD:-flock}" != mkdir ] && command -v flock >/dev/null 2>&1; then
        lock_with_flock "$_lock_lock_wait"
    else
        lock_with_mkdir "$_lock_lock_wait"
    fi
    printf 'pid %s (%s)\n' "$$" "$SUBCOMMAND" >"$STATE_DIR/lock.owner" 2>/dev/null || :
    log "lock taken"
}

lock_with_flock() {
    if ! : 2>/dev/null >>"$STATE_DIR/lock"; then
        die "$EXIT_FAILED" "cannot open the lock file $STATE_DIR/lock"
    fi
    # fd 9 stays open for the life of this process; the rollback sleeper is
    # started with 9>&- so that it never holds the lock while it sleeps.
    exec 9>>"$STATE_DIR/lock"
    if ! flock -n 9; then
        printf 'hlfw: another hlfw run holds the lock (%s); waiting up to %s s\n' "$(lock_owner)" "$1" >&2
        log "waiting for the lock held by $(lock_owner)"
        if ! flock -w "$1" 9; then
            die "$EXIT_LOCKED" "another hlfw run ($(lock_owner)) still holds $STATE_DIR/lock after $1 s; nothing was changed. Check 'hlfw status' and $STATE_DIR/log, then try again"
        fi
    fi
    LOCK_KIND=flock
}

lock_with_mkdir() {
    _mk_lock_dir="$STATE_DIR/lock.d"
    _mk_waited=0
    _mk_announced=
    while ! mkdir "$_mk_lock_dir" 2>/dev/null; do
        _mk_holder=$(cat "$_mk_lock_dir/pid" 2>/dev/null || :)
        if { [ -n "$_mk_holder" ] && ! kill -0 "$_mk_holder" 2>/dev/null; } ||
            { [ -z "$_mk_holder" ] && [ "$_mk_waited" -ge 5 ]; }; then
            warn "removing stale lock $_mk_lock_dir (holder pid '${_mk_holder:-none}' is not running)"
            # Rename before removing so that two waiters never both delete a fresh lock.
            if mv "$_mk_lock_dir" "$_mk_lock_dir.stale.$$" 2>/dev/null; then
                rm -rf "$_mk_lock_dir.stale.$$" || :
            fi
            continue
        fi
        if [ "$_mk_waited" -ge "$1" ]; then
            die "$EXIT_LOCKED" "another hlfw run (pid ${_mk_holder:-unknown}) still holds $_mk_lock_dir after $1 s; nothing was changed. Check 'hlfw status' and $STATE_DIR/log, then try again"
        fi
        if [ -z "$_mk_announced" ]; then
            printf 'hlfw: another hlfw run holds the lock (pid %s); waiting up to %s s\n' "${_mk_holder:-unknown}" "$1" >&2
            log "waiting for the lock held by pid ${_mk_holder:-unknown}"
            _mk_announced=1
        fi
        sleep 1
        _mk_waited=$((_mk_waited + 1))
    done
    printf '%s\n' "$$" >"$_mk_lock_dir/pid"
    LOCK_KIND='mkdir'
}

lock_release_mkdir() {
    if [ "$(cat "$STATE_DIR/lock.d/pid" 2>/dev/null || :)" = "$$" ]; then
        rm -rf "$STATE_DIR/lock.d" || :
    fi
    LOCK_KIND=
}
