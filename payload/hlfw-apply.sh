# shellcheck shell=sh
# hlfw-apply.sh - sourced by hlfw (never run on its own).
# `hlfw apply`: check, store and test a release, snapshot, arm the rollback, load it
# (or do nothing when it is already live). Its last stdout line is for the deployer:
#   hlfw-apply: pending release=HASH deadline=EPOCH   (confirm before EPOCH)
#   hlfw-apply: active release=HASH                   (confirmed and live: nothing to confirm)

parse_apply_arguments() {
    RELEASE_DIR=
    TIMEOUT=
    NONCE_SHA256=
    while [ $# -gt 0 ]; do
        case $1 in
            --release) [ $# -ge 2 ] || usage_error "--release needs a directory"; RELEASE_DIR=$2; shift 2 ;;
            --timeout) [ $# -ge 2 ] || usage_error "--timeout needs a number of seconds"; TIMEOUT=$2; shift 2 ;;
            --nonce-sha256) [ $# -ge 2 ] || usage_error "--nonce-sha256 needs 64 hex digits"; NONCE_SHA256=$2; shift 2 ;;
            *) usage_error "apply: unknown argument '$1'" ;;
        esac
    done
    case $NONCE_SHA256 in
        *[!0-9a-f]*) usage_error "--nonce-sha256 must be the sha256 of the confirm nonce (64 lowercase hex digits), not '$NONCE_SHA256'" ;;
    esac
    [ -z "$NONCE_SHA256" ] || [ "${#NONCE_SHA256}" -eq 64 ] ||
        usage_error "--nonce-sha256 must be 64 lowercase hex digits (a sha256), not ${#NONCE_SHA256} characters"
    [ -n "$RELEASE_DIR" ] || usage_error "apply needs --release DIR"
    [ -n "$TIMEOUT" ] || usage_error "apply needs --timeout SECONDS (how long to wait for confirm before rolling back)"
    case $TIMEOUT in
        *[!0-9]* | '' | 0*) usage_error "--timeout must be a whole number of seconds between 1 and 86400, not '$TIMEOUT'" ;;
    esac
    [ "$TIMEOUT" -le 86400 ] || usage_error "--timeout must be at most 86400 seconds, not '$TIMEOUT'"
    [ -d "$RELEASE_DIR" ] || usage_error "release directory '$RELEASE_DIR' does not exist"
    RELEASE_DIR=$(cd "$RELEASE_DIR" && pwd -P) || usage_error "cannot enter '$RELEASE_DIR'"
}

# An unchanged release that is already confirmed and live: touch nothing.
# Returns 0 when it handled the apply.
apply_if_already_active() {
    _noop_hash=$1
    [ "$(state_get state)" = active ] && [ "$(state_get release)" = "$_noop_hash" ] || return 1
    if ! compare_live_with_release "$WORK_DIR/effective"; then
        warn "cannot compare the live rules with release $_noop_hash ($LAST_ERROR); applying it again"
        return 1
    fi
    if [ -n "$COMPARE_DIFFERENT" ]; then
        warn "release $_noop_hash is recorded as active but the live rules differ (${COMPARE_DIFFERENT# }); applying it again"
        return 1
    fi
    if [ "$(state_get persisted_release)" != "$_noop_hash" ] || ! persisted_matches "$WORK_DIR/effective"; then
        if persist_release "$_noop_hash" "$WORK_DIR/effective"; then
            state_update "persisted_release=$_noop_hash"
            info "boot-time files did not match release $_noop_hash; rewrote them (live rules untouched)"
        else
            die "$EXIT_FAILED" "release $_noop_hash is live but the boot-time files could not be rewritten: $LAST_ERROR"
        fi
    fi
    log "release $_noop_hash already active; nothing to do"
    info "release $_noop_hash already active; nothing to do"
    info "hlfw-apply: active release=$_noop_hash"
    return 0
}

# Releases from before the project owned only its HL-* chains put their rules straight into
# INPUT and replaced the whole table: the first apply over one must remove those rules too.
host_runs_whole_table_release() {
    _whole_active=$(state_get active_release)
    [ -n "$_whole_active" ] && [ -f "$STATE_DIR/releases/$_whole_active/rules.v4" ] || return 1
    ! check_owned_rules_file "$STATE_DIR/releases/$_whole_active/rules.v4"
}

# Deals with a release still waiting for confirm. Returns 0 when apply is done.
handle_pending_before_apply() {
    _pend_hash=$1
    [ "$(state_get state)" = pending ] || return 1
    _pend_pending=$(state_get release)
    _pend_deadline=$(state_get deadline)
    _pend_now=$(now)
    if [ "$_pend_pending" = "$_pend_hash" ] && [ "$_pend_now" -lt "$_pend_deadline" ]; then
        # Only this apply's confirm may keep the rules now: the older nonce goes stale.
        state_update "nonce_sha256=$NONCE_SHA256" "apply_connection=${SSH_CONNECTION:-}"
        info "release $_pend_hash is already live and waiting for confirmation; it rolls back in $((_pend_deadline - _pend_now)) s unless you run: hlfw confirm --release $_pend_hash (over a new SSH connection)"
        log "apply of pending $_pend_hash: nothing to reload; confirm now bound to this apply"
        info "hlfw-apply: pending release=$_pend_hash deadline=$_pend_deadline"
        return 0
    fi
    if pending_lost_in_reboot; then
        mark_lost_in_reboot "$_pend_pending"
        return 1
    fi
    # Roll the unconfirmed release back first, so the snapshot we take next is
    # the last confirmed state, never another unconfirmed one.
    disarm_rollback "$_pend_pending"
    if [ "$_pend_now" -ge "$_pend_deadline" ]; then _pend_why=deadline; else _pend_why="superseded by $_pend_hash"; fi
    info "rolling back unconfirmed release $_pend_pending before applying $_pend_hash"
    rollback_pending "$_pend_pending" "$_pend_why" ||
        die "$EXIT_FAILED" "could not roll back the unconfirmed release $_pend_pending, so $_pend_hash was not applied: $LAST_ERROR"
    return 1
}

# load_release_live DIR HASH MODE: swaps in the sets apply built (ipsets_build_start), loads
# v4, v6 (MODE owned: only the project's part;
# table: whole tables, once, when the host still runs a release from before that); on the first
# failure puts everything back. Signals are ignored meanwhile so that a dropped terminal cannot
# stop it half-way.
load_release_live() {
    _load_dir=$1
    _load_hash=$2
    _load_mode=$3
    trap '' HUP INT TERM
    _load_failed_file=
    if [ -f "$_load_dir/ipsets" ] && ! ipsets_swap_in; then
        _load_failed_file=ipsets
    else
        for _load_family in v4 v6; do
            if [ "$_load_mode" = table ]; then
                if [ "$_load_family" = v4 ]; then _load_tool=iptables-restore; else _load_tool=ip6tables-restore; fi
                run_restore "$_load_tool" "$_load_dir/rules.$_load_family" && continue
            else
                load_owned "$_load_family" release "$WORK_DIR/release.$_load_family" \
                    "$WORK_DIR/policies.$_load_family" "$WORK_DIR/ensured.$_load_family" && continue
            fi
            _load_failed_file=rules.$_load_family
            break
        done
    fi
    if [ -n "$_load_failed_file" ]; then
        _load_load_error=$LAST_ERROR
        disarm_rollback "$_load_hash"
        if rollback_pending "$_load_hash" "applying $_load_failed_file failed"; then
            _load_after="the previous rules (ipsets, v4, v6) are back"
        else
            _load_after="ROLLING BACK ALSO FAILED, check the live rules now: $LAST_ERROR"
        fi
        trap 'exit 129' HUP
        trap 'exit 130' INT
        trap 'exit 143' TERM
        die "$EXIT_FAILED" "applying release $_load_hash failed at $_load_failed_file: $_load_load_error; $_load_after"
    fi
    trap 'exit 129' HUP
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

cmd_apply() {
    parse_apply_arguments "$@"
    require_tools iptables-restore ip6tables-restore iptables-save ip6tables-save sha256sum
    require_known_os
    make_work_dir
    _apply_hash=$(release_hash_of "$RELEASE_DIR")
    # Everything below reads this checked copy, never RELEASE_DIR again: a release that is not
    # whole or does not match its manifest is refused before the lock.
    _apply_copy="$WORK_DIR/release"
    copy_checked_release "$RELEASE_DIR" "$_apply_copy"
    checksums_start "$_apply_copy"
    if [ -f "$_apply_copy/ipsets" ]; then
        require_tools ipset
        # Checked and renamed for the temporary sets in one pass (the build under the lock
        # only loads the result).
        _apply_sets_status=0
        ipsets_check_and_rename "$_apply_copy/ipsets" "$WORK_DIR/ipsets" || _apply_sets_status=$?
        [ "$_apply_sets_status" -ne 1 ] || die "$EXIT_USAGE" "release $RELEASE_DIR: ipsets: $LAST_ERROR"
        [ "$_apply_sets_status" -eq 0 ] ||
            die "$EXIT_FAILED" "release $_apply_hash does not load, nothing was changed: ipsets: $LAST_ERROR"
    fi
    for _apply_file in rules.v4 rules.v6 docker-hook.v4 docker-hook.v6; do
        [ -f "$_apply_copy/$_apply_file" ] || continue
        check_owned_rules_file "$_apply_copy/$_apply_file" ||
            die "$EXIT_USAGE" "release $RELEASE_DIR: $_apply_file: $LAST_ERROR; nothing was changed"
    done
    verify_copied_release "$RELEASE_DIR" "$_apply_copy"
    lock_acquire
    store_release "$RELEASE_DIR" "$_apply_hash" "$_apply_copy"
    _apply_stored="$STATE_DIR/releases/$_apply_hash"
    log "apply $_apply_hash (timeout $TIMEOUT s) from $RELEASE_DIR"
    make_effective_release "$_apply_stored" "$_apply_hash" now

    apply_if_already_active "$_apply_hash" && return 0
    handle_pending_before_apply "$_apply_hash" && return 0

    # The sets' members are tested where they are built, before anything is armed. They fill in
    # the background (see ipsets_build_start) while the rules are tested in the scratch
    # namespace and the snapshot is taken: neither reads or touches the temporary sets.
    _apply_sets=
    if [ -f "$WORK_DIR/effective/ipsets" ]; then
        IFS= read -r _apply_sets <"$WORK_DIR/ipsets.pairs" || :
        ipsets_build_start "$WORK_DIR/ipsets" "$WORK_DIR/effective/ipsets" ||
            die "$EXIT_FAILED" "release $_apply_hash does not load, nothing was changed: ipsets: $LAST_ERROR"
    fi
    if ! prepare_release "$WORK_DIR/effective" rules; then
        die "$EXIT_FAILED" "release $_apply_hash does not load, nothing was changed: $LAST_ERROR"
    fi
    _apply_mode=owned
    if host_runs_whole_table_release; then
        _apply_mode=table
        info "the host runs release $(state_get active_release), which replaced whole tables: this apply replaces them once more, then only the project's chains are touched"
    fi
    take_snapshot "$_apply_stored" "$_apply_hash" "$_apply_mode" "$_apply_sets"
    if [ -f "$WORK_DIR/effective/ipsets" ] && ! ipsets_build_finish; then
        die "$EXIT_FAILED" "release $_apply_hash does not load, nothing was changed: ipsets: $LAST_ERROR"
    fi
    _apply_hlfw="$_apply_stored/hlfw"
    [ -f "$_apply_hlfw" ] || _apply_hlfw=$SELF
    _apply_previous=$(state_get active_release)
    arm_rollback "$_apply_hash" "$TIMEOUT" "$_apply_hlfw"
    _apply_now=$(now)
    _apply_deadline=$((_apply_now + TIMEOUT))
    state_update state=pending "release=$_apply_hash" "timeout=$TIMEOUT" "deadline=$_apply_deadline" \
        "rollback_method=$ROLLBACK_METHOD" "rollback_handle=$ROLLBACK_HANDLE" \
        "previous=$_apply_previous" reason= applied_at="$_apply_now" "boot_id=$(boot_id)" \
        "nonce_sha256=$NONCE_SHA256" "apply_connection=${SSH_CONNECTION:-}" "docker_hook=$DOCKER_HOOK"
    history_add "$_apply_hash" applied "$TIMEOUT"
    log "rollback armed ($ROLLBACK_METHOD $ROLLBACK_HANDLE) for $_apply_deadline; loading $_apply_hash"

    load_release_live "$WORK_DIR/effective" "$_apply_hash" "$_apply_mode"

    log "release $_apply_hash live, pending confirmation until $_apply_deadline"
    info "applied release $_apply_hash (v4: $(rule_count "$_apply_stored/rules.v4") rules, v6: $(rule_count "$_apply_stored/rules.v6") rules, ipsets: $IPSET_COUNT); it rolls back in $TIMEOUT s ($ROLLBACK_METHOD) unless confirmed over a new SSH connection: hlfw confirm --release $_apply_hash"
    info "hlfw-apply: pending release=$_apply_hash deadline=$_apply_deadline"
}
