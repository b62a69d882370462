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
    # The last ID= and ID_LIKE= lines, quotes dropped; read in the shell (every apply asks).
    _os_os_id=
    _os_os_like=
    while IFS= read -r _os_line || [ -n "$_os_line" ]; do
        case $_os_line in
            ID=*) _os_os_id=$(without_chars "${_os_line#ID=}" "\"'") ;;
            ID_LIKE=*) _os_os_like=$(without_chars "${_os_line#ID_LIKE=}" "\"'") ;;
        esac
    done <"$_os_os_file"
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

# netfilter-persistent (Debian) restores with --noflush only when its defaults file says so:
# without it, the boot load flushes whole tables, and Docker's or fail2ban's chains with them
# when they started first. Its `save` must not replace the release files with a dump of the
# live rules either. The file is the package's: only these keys are set, the rest is kept.
NETFILTER_PERSISTENT_DEFAULTS=/etc/default/netfilter-persistent
BOOT_LOADER_SETTINGS='IPTABLES_RESTORE_NOFLUSH=yes IP6TABLES_RESTORE_NOFLUSH=yes IPTABLES_SKIP_SAVE=yes IP6TABLES_SKIP_SAVE=yes IPSET_SKIP_SAVE=yes'

configure_boot_loader() {
    [ "$(os_flavour)" = debian ] || return 0
    _cbl_file=$NETFILTER_PERSISTENT_DEFAULTS
    if [ ! -f "$_cbl_file" ]; then
        warn "$_cbl_file is missing (netfilter-persistent not installed? run hlfw install-deps): a boot load would flush other tools' rules"
        return 0
    fi
    # cp -p first: the new file keeps the package file's owner and mode.
    if ! cp -p "$_cbl_file" "$_cbl_file.hlfw-new" || ! awk -v settings="$BOOT_LOADER_SETTINGS" '
            BEGIN { n = split(settings, kv, " "); for (i = 1; i <= n; i++) { split(kv[i], p, "="); want[p[1]] = kv[i]; key_at[i] = p[1] } }
            {
                key = $0; sub(/^[ \t]*#?[ \t]*/, "", key); sub(/=.*/, "", key)
                if ((key in want) && $0 ~ /^[ \t]*#?[ \t]*[A-Z0-9_]+=/) { if (!(key in done)) print want[key]; done[key] = 1; next }
                print
            }
            END {
                for (i = 1; i <= n; i++) if (!(key_at[i] in done)) {
                    if (!told++) print "# set by hardened-lightsail: boot adds the project'"'"'s chains (--noflush), save never replaces its files"
                    print want[key_at[i]]
                }
            }' "$_cbl_file" >"$_cbl_file.hlfw-new"; then
        rm -f "$_cbl_file.hlfw-new"
        LAST_ERROR="cannot write $_cbl_file.hlfw-new"
        return 1
    fi
    if cmp -s "$_cbl_file" "$_cbl_file.hlfw-new"; then
        rm -f "$_cbl_file.hlfw-new"
        return 0
    fi
    # A rename is atomic; where the file is a mount point (a bind-mounted copy) only an
    # in-place write can change it.
    if ! mv -f "$_cbl_file.hlfw-new" "$_cbl_file" 2>/dev/null; then
        if ! cat "$_cbl_file.hlfw-new" >"$_cbl_file"; then
            rm -f "$_cbl_file.hlfw-new"
            LAST_ERROR="cannot rewrite $_cbl_file"
            return 1
        fi
        rm -f "$_cbl_file.hlfw-new"
    fi
    log "set $BOOT_LOADER_SETTINGS in $_cbl_file"
}

# boot_restore_flags TOOL: the flags the boot loader restores with (see configure_boot_loader).
boot_restore_flags() {
    [ "$(os_flavour)" = debian ] && [ -f "$NETFILTER_PERSISTENT_DEFAULTS" ] || return 0
    case $1 in iptables-restore) _brf_key=IPTABLES_RESTORE_NOFLUSH ;; *) _brf_key=IP6TABLES_RESTORE_NOFLUSH ;; esac
    [ "$(sed -n "s/^[ \t]*$_brf_key=//p" "$NETFILTER_PERSISTENT_DEFAULTS" | tail -n 1 | tr -d '"'"'")" = yes ] || return 0
    printf -- '--noflush'
}

# Writes the release files (never iptables-save output) where the OS loads them
# at boot: all temp files first, then renames, so a failure changes nothing.
# persist_release HASH DIR: DIR holds the files the host runs of release HASH (effective).
persist_release() {
    _persist_hash=$1
    _persist_dir=$2
    configure_boot_loader || return 1
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

# persisted_matches DIR: the boot-time files are DIR's (see persist_release).
persisted_matches() {
    for _pm_pair in $(persist_pairs); do
        case $(persisted_status "$1" "${_pm_pair%%=*}" "${_pm_pair#*=}") in
            same | none) ;;
            *) return 1 ;;
        esac
    done
}

# Loads the persisted files the way the boot-time loaders do: ipsets first,
# then IPv4, then IPv6 (netfilter-persistent plugins 10-ipset, 15-ip4tables,
# 25-ip6tables, with --noflush when its defaults file says so; on Amazon Linux
# ipset.service before iptables/ip6tables, whole tables).
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
        run_restore "$_boot_tool" "$_boot_file" "$(boot_restore_flags "$_boot_tool")" || die "$EXIT_FAILED" "$LAST_ERROR"
        _boot_loaded="$_boot_loaded $_boot_file"
    done
    log "boot-load loaded$_boot_loaded"
    info "boot-load: loaded${_boot_loaded:- nothing}"
}
