# shellcheck shell=sh
# hlfw-common.sh - sourced by hlfw (never run on its own).
# Messages, process setup (root, work directory, cleanup) and tool checks:
# what every hlfw command uses.

info() {
    printf '%s\n' "$*"
}

log() {
    _log_log_line="$(date '+%Y-%m-%dT%H:%M:%S%z' 2>/dev/null || :) hlfw[$$] ${SUBCOMMAND}: $*"
    if [ -d "$STATE_DIR" ] && [ -w "$STATE_DIR" ]; then
        printf '%s\n' "$_log_log_line" >>"$STATE_DIR/log" 2>/dev/null || :
    fi
    if [ "${HLFW_SYSLOG:-1}" = 1 ] && command -v logger >/dev/null 2>&1; then
        logger -t hardened-lightsail -- "${SUBCOMMAND}: $*" 2>/dev/null || :
    fi
}

warn() {
    printf 'hlfw: warning: %s\n' "$*" >&2
    log "warning: $*"
}

die() {
    _die_die_code=$1
    shift
    printf 'hlfw: error: %s\n' "$*" >&2
    log "error: $*"
    exit "$_die_die_code"
}

# The "Usage" block at the top of hlfw, up to the first empty comment line.
usage() {
    awk '/^# Usage/ { on = 1 } on && /^#$/ { exit } on { sub(/^# ?/, ""); print }' "$SELF"
}

usage_error() {
    printf 'hlfw: error: %s\n' "$*" >&2
    usage >&2
    exit "$EXIT_USAGE"
}

now() {
    date +%s
}

# without_chars TEXT CHARS: TEXT with every character of CHARS removed (`tr -d` without
# starting a process).
without_chars() {
    _wc_text=$1
    while :; do
        case $_wc_text in
            *["$2"]*) _wc_text=${_wc_text%%["$2"]*}${_wc_text#*["$2"]} ;;
            *) break ;;
        esac
    done
    printf '%s' "$_wc_text"
}

cleanup() {
    # Sets an apply built but never swapped in (it stopped before the load): nothing uses them.
    # A build still running is stopped first, or it would go on filling what is destroyed;
    # so is a checksum run of the release copy about to be removed.
    ipsets_build_stop
    [ -z "${CHECKSUMS_PID:-}" ] || { kill "$CHECKSUMS_PID" 2>/dev/null; wait "$CHECKSUMS_PID" 2>/dev/null; } || :
    [ -z "${IPSET_BUILDING:-}" ] || ipsets_destroy_temporaries
    if [ -n "$WORK_DIR" ] && [ -d "$WORK_DIR" ]; then
        rm -rf "$WORK_DIR" || :
    fi
    if [ "$LOCK_KIND" = mkdir ]; then
        lock_release_mkdir
    fi
}

# Re-run as root through `sudo -n` (never prompt: this runs over SSH with no terminal).
become_root() {
    if [ "$(id -u)" = 0 ]; then
        return 0
    fi
    if ! command -v sudo >/dev/null 2>&1; then
        die "$EXIT_FAILED" "hlfw must run as root and sudo is not installed: run it as root (ssh root@host ...) or install sudo"
    fi
    if ! sudo -n true 2>/dev/null; then
        die "$EXIT_FAILED" "hlfw must run as root and 'sudo -n' refused (it wants a password, or this user may not use sudo): give this user passwordless sudo (e.g. 'USER ALL=(root) NOPASSWD: ALL' in /etc/sudoers.d/hardened-lightsail) or run hlfw as root"
    fi
    # sudo resets the environment: hand on what hlfw reads from it. SSH_CONNECTION tells
    # confirm whether it came over another connection than its apply.
    exec sudo -n -- env ${HLFW_STATE_DIR:+"HLFW_STATE_DIR=$HLFW_STATE_DIR"} \
        "SSH_CONNECTION=${SSH_CONNECTION:-}" /bin/sh "$SELF" "$@"
}

ensure_state_dir() {
    if ! mkdir -p "$STATE_DIR/releases" 2>/dev/null; then
        die "$EXIT_FAILED" "cannot create the state directory $STATE_DIR: check that its parent exists and is writable by root"
    fi
    chmod 0750 "$STATE_DIR" 2>/dev/null || :
}

make_work_dir() {
    ensure_state_dir
    if ! WORK_DIR=$(mktemp -d "$STATE_DIR/tmp.XXXXXX"); then
        die "$EXIT_FAILED" "cannot create a temporary directory in $STATE_DIR (disk full?)"
    fi
}

require_tools() {
    for _rt_tool in "$@"; do
        if ! command -v "$_rt_tool" >/dev/null 2>&1; then
            die "$EXIT_FAILED" "'$_rt_tool' is not installed: run 'hlfw install-deps' (or install it by hand) and try again"
        fi
    done
}
