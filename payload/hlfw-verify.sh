# shellcheck shell=sh
# hlfw-verify.sh - sourced by hlfw (never run on its own).
# `hlfw verify`: live rules and boot files compared with a release, what sshd lets in
# (hlfw-sshd.sh: a warning, never a failure) and the sockets that listen (for the
# deployer's check from outside).

# "proto address port" for every listening TCP socket and bound UDP socket,
# e.g. "tcp 0.0.0.0 22", "tcp :: 22", "udp 127.0.0.1 53"; "*" is a socket bound to
# every address of both families (dual-stack), "%iface" scopes are dropped.
listening_sockets() {
    if ! command -v ss >/dev/null 2>&1; then
        warn "ss (iproute2) is not installed: cannot list listening sockets"
        return 0
    fi
    if ! ss -H -ltnu >"$WORK_DIR/ss.out" 2>"$WORK_DIR/ss.err"; then
        warn "ss -H -ltnu failed: $(tr '\n' ' ' <"$WORK_DIR/ss.err")"
        return 0
    fi
    awk '{
            local = $5; i = match(local, /:[^:]*$/)
            if (i == 0) next
            port = substr(local, i + 1); address = substr(local, 1, i - 1)
            sub(/%[^]]*/, "", address); gsub(/^\[|\]$/, "", address)
            print $1, address, port
        }' "$WORK_DIR/ss.out" | LC_ALL=C sort -u
}

cmd_verify() {
    release_argument verify "$@"
    _verify_hash=$RELEASE_ARGUMENT
    require_tools iptables-save ip6tables-save unshare
    require_known_os
    _verify_dir="$STATE_DIR/releases/$_verify_hash"
    [ -f "$_verify_dir/RELEASE" ] || die "$EXIT_USAGE" "release $_verify_hash is not on this host ($_verify_dir missing); apply it first"
    make_work_dir
    make_effective_release "$_verify_dir" "$_verify_hash" recorded
    _verify_dir="$WORK_DIR/effective"
    _verify_problems=
    info "release=$_verify_hash"
    info "state=$(state_get state)"
    info "current_release=$(state_get release)"
    compare_live_with_release "$_verify_dir" ||
        die "$EXIT_FAILED" "cannot verify the live rules: $LAST_ERROR"
    # Other tools' rules are not judged, but one that bypasses or shadows the policy is named.
    while IFS= read -r _verify_warning; do
        warn "$_verify_warning"
    done <"$WORK_DIR/warnings"
    for _verify_what in v4 v6 ipsets; do
        if [ "$_verify_what" = ipsets ] && [ ! -f "$_verify_dir/ipsets" ]; then
            info "live_ipsets=none"
            continue
        fi
        case " $COMPARE_DIFFERENT " in
            *" $_verify_what "*)
                info "live_$_verify_what=different"
                _verify_problems="$_verify_problems live-$_verify_what"
                show_diff "$WORK_DIR/release.$_verify_what.canon" "$WORK_DIR/live.$_verify_what.canon" "release $_verify_hash $_verify_what" "live $_verify_what"
                ;;
            *) info "live_$_verify_what=same" ;;
        esac
    done
    for _verify_pair in $(persist_pairs); do
        _verify_name=${_verify_pair%%=*}
        _verify_dest=${_verify_pair#*=}
        _verify_status=$(persisted_status "$_verify_dir" "$_verify_name" "$_verify_dest")
        info "persisted_$_verify_name=$_verify_status"
        case $_verify_status in
            same | none) continue ;;
            unexpected) printf '%s exists but release %s has no %s\n' "$_verify_dest" "$_verify_hash" "$_verify_name" >&2 ;;
            missing) printf '%s is missing: run hlfw confirm --release %s\n' "$_verify_dest" "$_verify_hash" >&2 ;;
            different) show_diff "$_verify_dir/$_verify_name" "$_verify_dest" "release $_verify_hash $_verify_name" "$_verify_dest" ;;
        esac
        _verify_problems="$_verify_problems persisted-$_verify_name"
    done
    # A firewall that lets only admins reach SSH still fronts an sshd: say when it takes passwords.
    sshd_login_report >"$WORK_DIR/sshd"
    while IFS= read -r _verify_sshd; do
        case $_verify_sshd in
            'warning: '*) warn "${_verify_sshd#warning: }" ;;
            *) info "$_verify_sshd" ;;
        esac
    done <"$WORK_DIR/sshd"
    info "listening:"
    listening_sockets
    if [ -n "$_verify_problems" ]; then
        die "$EXIT_FAILED" "release $_verify_hash does not match:$_verify_problems (diff above)"
    fi
    log "verified release $_verify_hash"
}
