# shellcheck shell=sh
# hlfw-confirm.sh - sourced by hlfw (never run on its own).
# `hlfw confirm`: disarm the rollback of the pending release and persist its files,
# or say clearly that it came too late. A confirm is bound to its apply: it must come
# over another SSH connection and name the nonce whose sha256 the apply recorded.

too_late() {
    _late_hash=$1
    _late_timeout=$2
    _late_reason=$3
    case $_late_reason in
        deadline | '')
            printf 'rules were rolled back: new SSH connections failed within %s s\n' "$_late_timeout" >&2
            log "confirm of $_late_hash came too late: rolled back after $_late_timeout s"
            ;;
        *)
            printf 'rules were rolled back: %s\n' "$_late_reason" >&2
            log "confirm of $_late_hash refused: rolled back ($_late_reason)"
            ;;
    esac
    exit "$EXIT_ROLLED_BACK"
}

# Refuses (exit 5, nothing changed) a confirm that proves nothing: conntrack keeps the
# apply's own session alive under any rules, a local root process is no new connection,
# and a confirm meant for an earlier apply of the same release must not keep this one.
refuse_unbound_confirm() {
    _bound_hash=$1
    _bound_nonce=$2
    _bound_connection=${SSH_CONNECTION:-}
    if [ -z "$_bound_connection" ]; then
        die "$EXIT_REFUSED" "confirm must come over a new SSH connection: this one is not over SSH (SSH_CONNECTION is empty); release $_bound_hash stays pending"
    fi
    if [ "$_bound_connection" = "$(state_get apply_connection)" ]; then
        die "$EXIT_REFUSED" "confirm must come over a new SSH connection: this is the apply's own connection ($_bound_connection); release $_bound_hash stays pending"
    fi
    _bound_expected=$(state_get nonce_sha256)
    [ -n "$_bound_expected" ] || return 0
    if [ -z "$_bound_nonce" ]; then
        die "$EXIT_REFUSED" "stale or wrong nonce: this confirm belongs to another apply (the apply of $_bound_hash recorded a nonce and no --nonce was given); it stays pending"
    fi
    if [ "$(printf '%s' "$_bound_nonce" | sha256sum | cut -c 1-64)" != "$_bound_expected" ]; then
        die "$EXIT_REFUSED" "stale or wrong nonce: this confirm belongs to another apply (the latest apply of $_bound_hash recorded another nonce); it stays pending"
    fi
}

cmd_confirm() {
    _confirm_hash=
    _confirm_nonce=
    while [ $# -gt 0 ]; do
        case $1 in
            --release) [ $# -ge 2 ] || usage_error "usage: hlfw confirm --release HASH [--nonce NONCE]"; _confirm_hash=$2; shift 2 ;;
            --nonce) [ $# -ge 2 ] || usage_error "usage: hlfw confirm --release HASH [--nonce NONCE]"; _confirm_nonce=$2; shift 2 ;;
            *) usage_error "usage: hlfw confirm --release HASH [--nonce NONCE]" ;;
        esac
    done
    [ -n "$_confirm_hash" ] || usage_error "usage: hlfw confirm --release HASH [--nonce NONCE]"
    require_hash "$_confirm_hash"
    require_known_os
    make_work_dir
    lock_acquire
    _confirm_state=$(state_get state)
    if [ "$(state_get release)" != "$_confirm_hash" ]; then
        _confirm_last=$(history_last "$_confirm_hash")
        case $_confirm_last in
            '') die "$EXIT_USAGE" "release $_confirm_hash was never applied on this host (current: ${_confirm_state:-none} $(state_get release)); apply it first" ;;
            *" rolled-back "*)
                _confirm_timeout=$(printf '%s\n' "$_confirm_last" | sed -n 's/.* timeout=\([0-9]*\).*/\1/p')
                _confirm_reason=$(printf '%s\n' "$_confirm_last" | sed -n 's/.* reason=//p')
                too_late "$_confirm_hash" "$_confirm_timeout" "$_confirm_reason"
                ;;
            *) die "$EXIT_USAGE" "release $_confirm_hash is not the current release (current: $_confirm_state $(state_get release)); apply it again to make it current" ;;
        esac
    fi
    _confirm_timeout=$(state_get timeout)
    case $_confirm_state in
        rolled-back) too_late "$_confirm_hash" "$_confirm_timeout" "$(state_get reason)" ;;
        active)
            if [ "$(state_get persisted_release)" != "$_confirm_hash" ]; then
                make_effective_release "$STATE_DIR/releases/$_confirm_hash" "$_confirm_hash" recorded
                persist_release "$_confirm_hash" "$WORK_DIR/effective" ||
                    die "$EXIT_FAILED" "release $_confirm_hash is live and confirmed but its files could not be written for boot: $LAST_ERROR; fix that and run confirm again"
                state_update "persisted_release=$_confirm_hash"
            fi
            info "release $_confirm_hash is already confirmed and active; nothing to do"
            return 0
            ;;
        pending) ;;
        *) die "$EXIT_USAGE" "release $_confirm_hash is in state '$_confirm_state'; nothing to confirm" ;;
    esac
    if pending_lost_in_reboot; then
        mark_lost_in_reboot "$_confirm_hash"
        too_late "$_confirm_hash" "$_confirm_timeout" "$(state_get reason)"
    fi
    if [ "$(now)" -ge "$(state_get deadline)" ]; then
        # The timer may not have fired yet; never keep rules nobody confirmed in time.
        disarm_rollback "$_confirm_hash"
        rollback_pending "$_confirm_hash" deadline ||
            die "$EXIT_FAILED" "the deadline passed and rolling back $_confirm_hash failed: $LAST_ERROR"
        too_late "$_confirm_hash" "$_confirm_timeout" deadline
    fi
    refuse_unbound_confirm "$_confirm_hash" "$_confirm_nonce"
    disarm_rollback "$_confirm_hash"
    _confirm_previous=$(state_get active_release)
    state_update state=active "active_release=$_confirm_hash" "previous=$_confirm_previous" deadline= \
        rollback_handle= confirmed_at="$(now)" "confirm_connection=${SSH_CONNECTION:-}"
    history_add "$_confirm_hash" confirmed "$_confirm_timeout"
    make_effective_release "$STATE_DIR/releases/$_confirm_hash" "$_confirm_hash" recorded
    if ! persist_release "$_confirm_hash" "$WORK_DIR/effective"; then
        die "$EXIT_FAILED" "release $_confirm_hash is confirmed and live, but its files could not be written for boot: $LAST_ERROR; fix that and run 'hlfw confirm --release $_confirm_hash' again"
    fi
    state_update "persisted_release=$_confirm_hash"
    prune_releases
    log "confirmed release $_confirm_hash"
    info "confirmed release $_confirm_hash: rollback disarmed, release files persisted to $(persist_paths)"
}
