# shellcheck shell=sh
# hlfw-rollback.sh - sourced by hlfw (never run on its own).
# The safety net: the snapshot apply takes, the rollback timer or sleeper it arms,
# and putting the snapshot back (`hlfw rollback`, the timer, a failed apply).

# take_snapshot DIR HASH MODE SETS: saves what apply is about to replace: the live rules of both
# families (all of them: the rollback computes the project's part from them) and the release's
# sets (SETS: the " SET=TEMPORARY" pairs ipsets_check_and_rename wrote). MODE owned: the rollback puts back only the project's part
# (HL-* chains, jumps, the policies the release sets). MODE table: the host still runs a
# release from before the project owned only its chains, which replaced whole tables; the
# rollback then does the same with these tables.
take_snapshot() {
    _snap_dir=$1
    _snap_hash=$2
    _snap_mode=$3
    _snap_snap="$STATE_DIR/rollback.new"
    rm -rf "$_snap_snap"
    mkdir "$_snap_snap" || die "$EXIT_FAILED" "cannot create $_snap_snap; nothing was changed"
    _snap_empty_tables=
    for _snap_family in v4 v6; do
        save_live "$_snap_family" "$_snap_snap/live.$_snap_family" ||
            die "$EXIT_FAILED" "cannot snapshot the live rules; nothing was changed: $LAST_ERROR"
        cp "$WORK_DIR/policies.$_snap_family" "$_snap_snap/policies.$_snap_family" ||
            die "$EXIT_FAILED" "cannot write the snapshot in $_snap_snap; nothing was changed"
        [ "$_snap_mode" = table ] || continue
        _snap_tables=$(tables_in "$_snap_dir/rules.$_snap_family")
        _snap_live_tables=$(tables_in "$_snap_snap/live.$_snap_family")
        {
            select_tables "$_snap_tables" <"$_snap_snap/live.$_snap_family"
            for _snap_table in $_snap_tables; do
                case " $_snap_live_tables " in
                    *" $_snap_table "*) ;;
                    *)
                        empty_table "$_snap_table" || die "$EXIT_FAILED" "release table '$_snap_table' in rules.$_snap_family is not one hlfw can snapshot"
                        _snap_empty_tables="$_snap_empty_tables $_snap_family:$_snap_table"
                        ;;
                esac
            done
        } >"$_snap_snap/tables.$_snap_family"
    done
    : >"$_snap_snap/ipsets"
    : >"$_snap_snap/ipsets.created"
    # Named from the pairs the check of the sets wrote: that spares another pass over a list of
    # 100,000 members. A set that exists is saved with its members; one that does not is
    # destroyed by the rollback.
    for _snap_pair in $4; do
        _snap_set=${_snap_pair%%=*}
        if ipset_exists "$_snap_set"; then
            ipset save "$_snap_set" >>"$_snap_snap/ipsets" 2>"$WORK_DIR/save.err" ||
                die "$EXIT_FAILED" "ipset save $_snap_set failed, cannot snapshot it; nothing was changed: $(tr '\n' ' ' <"$WORK_DIR/save.err")"
        else
            printf '%s\n' "$_snap_set" >>"$_snap_snap/ipsets.created"
        fi
    done
    printf 'release=%s\ntaken_at=%s\nmode=%s\nempty_tables=%s\n' "$_snap_hash" "$(now)" "$_snap_mode" \
        "${_snap_empty_tables# }" >"$_snap_snap/meta"
    rm -rf "$STATE_DIR/rollback"
    mv "$_snap_snap" "$STATE_DIR/rollback" || die "$EXIT_FAILED" "cannot move the snapshot into $STATE_DIR/rollback; nothing was changed"
}

# Puts the snapshot back: ipsets, v4, v6 together; sets the release created go last.
# Tries every part even if one fails, so as much as possible is back.
restore_snapshot() {
    _restore_snap="$STATE_DIR/rollback"
    _restore_mode=$(sed -n 's/^mode=//p' "$_restore_snap/meta" 2>/dev/null)
    _restore_failed=
    _restore_errors=
    if [ -s "$_restore_snap/ipsets" ] && ! ipsets_restore_atomic "$_restore_snap/ipsets"; then
        _restore_failed="$_restore_failed ipsets"
        _restore_errors="$_restore_errors $LAST_ERROR;"
    fi
    for _restore_family in v4 v6; do
        if [ "$_restore_family" = v4 ]; then _restore_tool=iptables-restore; else _restore_tool=ip6tables-restore; fi
        if [ "$_restore_mode" = table ]; then
            run_restore "$_restore_tool" "$_restore_snap/tables.$_restore_family" && continue
        else
            load_owned "$_restore_family" snapshot "$_restore_snap/live.$_restore_family" \
                "$_restore_snap/policies.$_restore_family" /dev/null && continue
        fi
        _restore_failed="$_restore_failed rules.$_restore_family"
        _restore_errors="$_restore_errors $LAST_ERROR;"
    done
    if [ -s "$_restore_snap/ipsets.created" ]; then
        while IFS= read -r _restore_set; do
            ipset_exists "$_restore_set" || continue
            ipset destroy "$_restore_set" 2>/dev/null || warn "could not destroy ipset $_restore_set created by the rolled-back release (still referenced?)"
        done <"$_restore_snap/ipsets.created"
    fi
    if [ -n "$_restore_failed" ]; then
        LAST_ERROR="restoring the snapshot failed for$_restore_failed:$_restore_errors"
        return 1
    fi
}

# Stops the pending release's timer or sleeper (only if it is really ours).
disarm_rollback() {
    _disarm_method=$(state_get rollback_method)
    _disarm_handle=$(state_get rollback_handle)
    _disarm_hash=$1
    case $_disarm_method in
        systemd)
            systemctl stop "$_disarm_handle.timer" >/dev/null 2>&1 || :
            systemctl stop "$_disarm_handle.service" >/dev/null 2>&1 || :
            log "stopped rollback timer $_disarm_handle"
            ;;
        sleeper)
            if [ -n "$_disarm_handle" ] && [ -r "/proc/$_disarm_handle/cmdline" ] &&
                tr '\0' ' ' <"/proc/$_disarm_handle/cmdline" | grep -q -- "_rollback-sleeper $_disarm_hash "; then
                # The sleeper leads its own session and process group (setsid):
                # kill the group so that its `sleep` child goes too.
                kill -s TERM -- "-$_disarm_handle" 2>/dev/null || kill -s TERM "$_disarm_handle" 2>/dev/null || :
                log "stopped rollback sleeper pid $_disarm_handle"
            else
                log "the rollback sleeper (pid ${_disarm_handle:-unknown}) for $_disarm_hash was not running"
            fi
            ;;
    esac
}

# xt_recent lists (e.g. port-scan bans) filled while an unconfirmed release was
# live were decided by rules nobody confirmed: they may well hold the admin that
# release locked out, and the previous rules would keep them banned. Empty them.
forget_recent_entries() {
    _forget_dir="$STATE_DIR/releases/$1"
    _forget_lists=$(cat "$_forget_dir/rules.v4" "$_forget_dir/rules.v6" 2>/dev/null |
        awk '{ for (i = 1; i < NF; i++) if ($i == "--name") print $(i + 1) }' | LC_ALL=C sort -u)
    for _forget_list in $_forget_lists; do
        _forget_file="/proc/net/xt_recent/$_forget_list"
        [ -w "$_forget_file" ] || continue
        if printf '/\n' >"$_forget_file" 2>/dev/null; then
            log "emptied xt_recent list $_forget_list (filled under the rolled-back release $1)"
        else
            warn "could not empty the xt_recent list $_forget_list: sources it banned stay banned until it expires"
        fi
    done
}

# Rolls the pending release back (lock held). REASON is recorded and shown by confirm.
rollback_pending() {
    _rp_hash=$1
    _rp_reason=$2
    _rp_timeout=$(state_get timeout)
    if restore_snapshot; then
        forget_recent_entries "$_rp_hash"
        _rp_ok=1
    else
        _rp_ok=
        _rp_restore_error=$LAST_ERROR
    fi
    state_update state=rolled-back "release=$_rp_hash" "reason=$_rp_reason" rolled_back_at="$(now)" deadline= rollback_handle=
    history_add "$_rp_hash" rolled-back "$_rp_timeout" "$_rp_reason"
    if [ -z "$_rp_ok" ]; then
        log "ROLLBACK OF $_rp_hash INCOMPLETE: $_rp_restore_error"
        LAST_ERROR=$_rp_restore_error
        return 1
    fi
    log "rolled back release $_rp_hash ($_rp_reason); the rules from before it are live again"
}

# systemd only rolls back the right firewall if it lives in our network and
# mount namespaces (a lab server in a netns must use the sleeper).
systemd_usable() {
    [ -d /run/systemd/system ] && command -v systemd-run >/dev/null 2>&1 || return 1
    [ "$(readlink /proc/1/ns/net 2>/dev/null)" = "$(readlink /proc/self/ns/net 2>/dev/null)" ] || return 1
    [ "$(readlink /proc/1/ns/mnt 2>/dev/null)" = "$(readlink /proc/self/ns/mnt 2>/dev/null)" ]
}

# arm_rollback HASH TIMEOUT HLFW_PATH: sets ROLLBACK_METHOD and ROLLBACK_HANDLE.
arm_rollback() {
    _arm_hash=$1
    _arm_timeout=$2
    _arm_hlfw=$3
    _arm_method=${HLFW_ROLLBACK_METHOD:-}
    if [ -z "$_arm_method" ]; then
        if systemd_usable; then _arm_method=systemd; else _arm_method=sleeper; fi
    fi
    case $_arm_method in
        systemd) arm_systemd "$_arm_hash" "$_arm_timeout" "$_arm_hlfw" ;;
        sleeper) arm_sleeper "$_arm_hash" "$_arm_timeout" "$_arm_hlfw" ;;
        *) die "$EXIT_USAGE" "HLFW_ROLLBACK_METHOD must be systemd or sleeper, not '$_arm_method'" ;;
    esac
}

# A transient timer + service, independent of the SSH session:
#   systemd-run --unit hlfw-rollback-HASH --on-active=Ns \
#     --timer-property=AccuracySec=1s --timer-property=RemainAfterElapse=no \
#     --setenv=HLFW_STATE_DIR=... /bin/sh .../releases/HASH/hlfw rollback --if-pending HASH
arm_systemd() {
    _systemd_unit="hlfw-rollback-$1"
    systemctl stop "$_systemd_unit.timer" "$_systemd_unit.service" >/dev/null 2>&1 || :
    systemctl reset-failed "$_systemd_unit.timer" "$_systemd_unit.service" >/dev/null 2>&1 || :
    if ! systemd-run --quiet --collect --unit "$_systemd_unit" \
        --description "hardened-lightsail: roll back firewall release $1 unless confirmed" \
        --on-active="${2}s" --timer-property=AccuracySec=1s --timer-property=RemainAfterElapse=no \
        --setenv=HLFW_STATE_DIR="$STATE_DIR" --setenv=HLFW_SYSLOG="${HLFW_SYSLOG:-1}" \
        /bin/sh "$3" rollback --if-pending "$1" 2>"$WORK_DIR/arm.err"; then
        die "$EXIT_FAILED" "systemd-run could not arm the rollback timer, so nothing was changed: $(tr '\n' ' ' <"$WORK_DIR/arm.err")"
    fi
    ROLLBACK_METHOD=systemd
    ROLLBACK_HANDLE=$_systemd_unit
}

# A detached sleeper: own session (setsid; no SIGHUP when SSH drops), HUP
# ignored, stdin/stdout from/to /dev/null, stderr to the log, fds 3-9 closed
# (fd 9 is our lock). An SSH remote command returns only when every process
# holding its channel's pipes is gone, so the sleeper must hold none of them.
arm_sleeper() {
    _sleeper_pidfile="$STATE_DIR/rollback/sleeper.pid"
    rm -f "$_sleeper_pidfile"
    command -v setsid >/dev/null 2>&1 ||
        die "$EXIT_FAILED" "setsid is not installed (util-linux): cannot start a rollback that survives the SSH session; nothing was changed"
    setsid /bin/sh "$3" _rollback-sleeper "$1" "$2" \
        </dev/null >/dev/null 2>>"$STATE_DIR/log" 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&- &
    # It writes its pid file within milliseconds: polling in 5 ms steps (up to 5 s) keeps
    # apply from idling longer than that for it.
    _sleeper_waited=0
    while [ ! -s "$_sleeper_pidfile" ]; do
        if [ "$_sleeper_waited" -ge 1000 ]; then
            die "$EXIT_FAILED" "the rollback sleeper did not start within 5 s (see $STATE_DIR/log); nothing was changed"
        fi
        sleep 0.005
        _sleeper_waited=$((_sleeper_waited + 1))
    done
    ROLLBACK_METHOD=sleeper
    ROLLBACK_HANDLE=$(cat "$_sleeper_pidfile")
}

# Internal: `_rollback-sleeper HASH SECONDS`, started by arm_sleeper only.
cmd_rollback_sleeper() {
    trap '' HUP
    _sleeper_main_hash=$1
    _sleeper_main_timeout=$2
    printf '%s\n' "$$" >"$STATE_DIR/rollback/sleeper.pid.tmp" &&
        mv -f "$STATE_DIR/rollback/sleeper.pid.tmp" "$STATE_DIR/rollback/sleeper.pid"
    warn_inherited_descriptors
    # stderr to /dev/null: when confirm kills our process group, the shell's
    # "Terminated" report for sleep would otherwise land in the log.
    sleep "$_sleeper_main_timeout" 2>/dev/null
    SUBCOMMAND=rollback
    cmd_rollback --if-pending "$_sleeper_main_hash"
}

# Descriptors >= 10 cannot be closed from POSIX sh; none are expected (sshd and
# sudo pass only 0-2), but name any pipe or socket so a hung session is explained.
warn_inherited_descriptors() {
    # ls runs as a child writing to a file, so this shell opens no pipe of its own.
    _wid_fd_list="$STATE_DIR/rollback/sleeper.fds"
    ls -l "/proc/$$/fd/" >"$_wid_fd_list" 2>/dev/null || return 0
    awk '$(NF - 1) == "->" && $(NF - 2) + 0 >= 3 && $NF ~ /^(pipe|socket):/ { print $(NF - 2) " (" $NF ")" }' "$_wid_fd_list" |
        while IFS= read -r _wid_fd; do
            log "warning: the rollback sleeper inherited fd $_wid_fd; an SSH session may wait for it to finish"
        done
    rm -f "$_wid_fd_list"
}

cmd_rollback() {
    _rollback_only_if=
    case $# in
        0) ;;
        2) [ "$1" = --if-pending ] || usage_error "usage: hlfw rollback [--if-pending HASH]"
            _rollback_only_if=$2
            require_hash "$_rollback_only_if" ;;
        *) usage_error "usage: hlfw rollback [--if-pending HASH]" ;;
    esac
    make_work_dir
    if [ -n "$_rollback_only_if" ]; then lock_acquire "$ROLLBACK_LOCK_WAIT_SECONDS"; else lock_acquire; fi
    _rollback_state=$(state_get state)
    _rollback_hash=$(state_get release)
    if [ "$_rollback_state" != pending ] || { [ -n "$_rollback_only_if" ] && [ "$_rollback_hash" != "$_rollback_only_if" ]; }; then
        if [ -n "$_rollback_only_if" ]; then
            log "rollback --if-pending $_rollback_only_if: nothing to do (state ${_rollback_state:-none} ${_rollback_hash})"
        fi
        info "nothing to roll back: state is ${_rollback_state:-none} for release ${_rollback_hash:-none}"
        return 0
    fi
    if [ -n "$_rollback_only_if" ]; then
        _rollback_reason=deadline
        # When run by the sleeper there is nothing to disarm but ourselves.
        [ "$(state_get rollback_method)" = systemd ] || [ "$(state_get rollback_handle)" = "$$" ] ||
            disarm_rollback "$_rollback_hash"
    else
        _rollback_reason="rolled back by hand"
        disarm_rollback "$_rollback_hash"
    fi
    if ! rollback_pending "$_rollback_hash" "$_rollback_reason"; then
        die "$EXIT_FAILED" "rolling back $_rollback_hash did not complete, check the live rules now: $LAST_ERROR"
    fi
    info "rolled back release $_rollback_hash ($_rollback_reason); the previous rules are live again"
}
