# shellcheck shell=sh
# hlfw-persist.sh - sourced by hlfw (never run on its own).
# Boot-time persistence: which files this OS loads at boot, writing a release there,
# and `hlfw boot-load`, which loads them the way boot does.

# debian: netfilter-persistent loads /etc/iptables/{ipsets,rules.v4,rules.v6}
# amzn:   ipset.service + iptables.service + ip6tables.service load /etc/sysconfig/{ipset,iptables,ip6tables}

os_flavour() {
    _os_os_file=${HLFW_OS_RELEASE:-/etc/os-release}
    if [ ! -r "$_os_os_file" ]; then
        printf 'unknown'
        return 0
    fi
    _os_os_id=$(sed -n 's/^ID=//p' "$_os_os_file" | tr -d '"'"'" | tail -n 1)
    _os_os_like=$(sed -n 's/^ID_LIKE=//p' "$_os_os_file" | tr -d '"'"'" | tail -n 1)
    case " $_os_os_id $_os_os_like " in
        *" debian "* | *" ubuntu "*) printf 'debian' ;;
        *" amzn "* | *" fedora "* | *" rhel "* | *" centos "*) printf 'amzn' ;;
        *) printf 'unknown' ;;
    esac
}

# Prints "ipsets-path v4-path v6-path" for the boot-time files of this OS.
persist_paths() {
    case $(os_flavour) in
        debian) printf '/etc/iptables/ipsets /etc/iptables/rules.v4 /etc/iptables/rules.v6' ;;
        amzn) printf '/etc/sysconfig/ipset /etc/sysconfig/iptables /etc/sysconfig/ip6tables' ;;
        *) return 1 ;;
    esac
}

require_known_os() {
    if ! persist_paths >/dev/null; then
        die "$EXIT_FAILED" "cannot tell how this OS loads firewall rules at boot (${HLFW_OS_RELEASE:-/etc/os-release} is neither Debian/Ubuntu nor Amazon Linux); nothing was changed"
    fi
}

# Writes the release files (never iptables-save output) where the OS loads them
# at boot: all temp files first, then renames, so a failure changes nothing.
persist_release() {
    _persist_hash=$1
    _persist_dir="$STATE_DIR/releases/$1"
    # shellcheck disable=SC2046 # three paths without spaces
    set -- $(persist_paths)
    _persist_ipsets_dest=$1
    _persist_v4_dest=$2
    _persist_v6_dest=$3
    case $(os_flavour) in debian) _persist_mode=0640 ;; *) _persist_mode=0600 ;; esac
    _persist_written=
    for _persist_pair in "rules.v4=$_persist_v4_dest" "rules.v6=$_persist_v6_dest" "ipsets=$_persist_ipsets_dest"; do
        _persist_name=${_persist_pair%%=*}
        _persist_dest=${_persist_pair#*=}
        [ -f "$_persist_dir/$_persist_name" ] || continue
        if ! mkdir -p "${_persist_dest%/*}" || ! cp "$_persist_dir/$_persist_name" "$_persist_dest.hlfw-new" || ! chmod "$_persist_mode" "$_persist_dest.hlfw-new"; then
            for _persist_done in $_persist_written "$_persist_dest"; do rm -f "$_persist_done.hlfw-new"; done
            LAST_ERROR="cannot write $_persist_dest.hlfw-new (disk full or read-only?)"
            return 1
        fi
        _persist_written="$_persist_written $_persist_dest"
    done
    for _persist_dest in $_persist_written; do
        mv -f "$_persist_dest.hlfw-new" "$_persist_dest" || {
            LAST_ERROR="cannot rename $_persist_dest.hlfw-new to $_persist_dest"
            return 1
        }
    done
    if [ ! -f "$_persist_dir/ipsets" ] && [ -e "$_persist_ipsets_dest" ]; then
        # A stale sets file would be loaded at boot although no rule uses it.
        rm -f "$_persist_ipsets_dest" || warn "could not remove the stale $_persist_ipsets_dest"
    fi
    log "persisted release files of $_persist_hash to$_persist_written"
}

# "rules.v4=PATH rules.v6=PATH ipsets=PATH": each release file and where boot loads it from.
persist_pairs() {
    # shellcheck disable=SC2046 # three paths without spaces
    set -- $(persist_paths)
    printf 'rules.v4=%s rules.v6=%s ipsets=%s' "$2" "$3" "$1"
}

# persisted_status RELEASE_DIR NAME DEST: how the boot-time file DEST stands against the
# release file NAME: same, different, missing, none (neither exists) or unexpected (only DEST).
persisted_status() {
    if [ ! -f "$1/$2" ]; then
        if [ -e "$3" ]; then printf 'unexpected'; else printf 'none'; fi
    elif [ ! -f "$3" ]; then
        printf 'missing'
    elif cmp -s "$1/$2" "$3"; then
        printf 'same'
    else
        printf 'different'
    fi
}

persisted_matches() {
    for _pm_pair in $(persist_pairs); do
        case $(persisted_status "$STATE_DIR/releases/$1" "${_pm_pair%%=*}" "${_pm_pair#*=}") in
            same | none) ;;
            *) return 1 ;;
        esac
    done
}

# Loads the persisted files the way the boot-time loaders do: ipsets first,
# then IPv4, then IPv6 (netfilter-persistent plugins 10-ipset, 15-ip4tables,
# 25-ip6tables; on Amazon Linux ipset.service before iptables/ip6tables).
cmd_boot_load() {
    [ $# -eq 0 ] || usage_error "boot-load takes no arguments"
    require_known_os
    make_work_dir
    # shellcheck disable=SC2046 # three paths without spaces
    set -- $(persist_paths)
    _boot_loaded=
    if [ -f "$1" ]; then
        require_tools ipset
        ipset restore -exist <"$1" 2>"$WORK_DIR/boot.err" ||
            die "$EXIT_FAILED" "ipset restore < $1 failed: $(tr '\n' ' ' <"$WORK_DIR/boot.err")"
        _boot_loaded="$_boot_loaded $1"
    fi
    for _boot_pair in "iptables-restore=$2" "ip6tables-restore=$3"; do
        _boot_tool=${_boot_pair%%=*}
        _boot_file=${_boot_pair#*=}
        if [ ! -f "$_boot_file" ]; then
            warn "skipping $_boot_tool: $_boot_file does not exist"
            continue
        fi
        run_restore "$_boot_tool" "$_boot_file" || die "$EXIT_FAILED" "$LAST_ERROR"
        _boot_loaded="$_boot_loaded $_boot_file"
    done
    log "boot-load loaded$_boot_loaded"
    info "boot-load: loaded${_boot_loaded:- nothing}"
}
