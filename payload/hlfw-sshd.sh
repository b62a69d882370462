# shellcheck shell=sh
# hlfw-sshd.sh - sourced by hlfw, and sent as it is by `fw check --host` (live_host.py), so it
# uses no other hlfw function. What the sshd that really serves this host's logins allows
# (`sshd -T` with that sshd's own config file), and the settings that let passwords in.

# The config file (-f) of the sshd listener this shell descends from, or nothing (sshd's
# default, /etc/ssh/sshd_config). Its process title keeps its arguments:
# "sshd: /usr/sbin/sshd -D -f /etc/ssh/other_config [listener] 0 of 10-100 startups".
sshd_config_in_use() {
    _sshd_pid=$$
    _sshd_args=
    while [ "${_sshd_pid:-0}" -gt 1 ] 2>/dev/null; do
        if [ "$(cat "/proc/$_sshd_pid/comm" 2>/dev/null)" = sshd ]; then
            _sshd_args=$(tr '\0' ' ' <"/proc/$_sshd_pid/cmdline" 2>/dev/null) || _sshd_args=
        fi
        _sshd_pid=$(sed -n 's/^PPid:[[:space:]]*//p' "/proc/$_sshd_pid/status" 2>/dev/null) || break
    done
    # The outermost sshd is the listener; its -f names the config file.
    # shellcheck disable=SC2086 # split on purpose: the title is the words of its command line
    set -- $_sshd_args
    while [ $# -gt 0 ]; do
        case $1 in
            -f) [ $# -gt 1 ] && printf '%s\n' "$2"; return 0 ;;
            -f?*) printf '%s\n' "${1#-f}"; return 0 ;;
            '[listener]') return 0 ;;
        esac
        shift
    done
}

sshd_as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi
}

# One line "sshd: config=FILE passwordauthentication=... kbdinteractiveauthentication=...
# permitrootlogin=... authenticationmethods=...", then one "warning: ..." line for each way in
# with a password. sshd -T reads the host keys: it runs as root (through `sudo -n` otherwise).
sshd_login_report() {
    _sshd_config=$(sshd_config_in_use)
    _sshd_failed=no
    _sshd_program=$(command -v sshd 2>/dev/null || echo /usr/sbin/sshd)
    if [ -n "$_sshd_config" ]; then
        _sshd_settings=$(sshd_as_root "$_sshd_program" -T -f "$_sshd_config" 2>&1) || _sshd_failed=yes
    else
        _sshd_settings=$(sshd_as_root "$_sshd_program" -T 2>&1) || _sshd_failed=yes
    fi
    _sshd_config=${_sshd_config:-/etc/ssh/sshd_config}
    if [ "$_sshd_failed" = yes ]; then
        printf 'sshd: config=%s unknown\n' "$_sshd_config"
        printf 'warning: sshd: cannot read the effective settings of %s (sshd -T: %s): password and root logins are unchecked\n' \
            "$_sshd_config" "$(printf '%s' "$_sshd_settings" | tail -n 1)"
        return 0
    fi
    printf '%s\n' "$_sshd_settings" | awk -v config="$_sshd_config" '
        $1 == "passwordauthentication" || $1 == "kbdinteractiveauthentication" || $1 == "permitrootlogin" ||
        $1 == "authenticationmethods" { value[$1] = $2 }
        END {
            printf "sshd: config=%s passwordauthentication=%s kbdinteractiveauthentication=%s permitrootlogin=%s authenticationmethods=%s\n",
                config, value["passwordauthentication"], value["kbdinteractiveauthentication"],
                value["permitrootlogin"], value["authenticationmethods"]
            # AuthenticationMethods without password or keyboard-interactive keeps both out, whatever they say.
            methods = value["authenticationmethods"]
            any = methods == "" || methods == "any"
            if (value["passwordauthentication"] == "yes" && (any || methods ~ /password/))
                printf "warning: sshd (%s) allows password logins (PasswordAuthentication yes): anyone the firewall lets reach SSH can guess passwords; set PasswordAuthentication no and reload sshd\n", config
            if (value["kbdinteractiveauthentication"] == "yes" && (any || methods ~ /keyboard-interactive/))
                printf "warning: sshd (%s) allows keyboard-interactive logins (KbdInteractiveAuthentication yes), which ask for a password through PAM; set KbdInteractiveAuthentication no and reload sshd\n", config
            if (value["permitrootlogin"] == "yes")
                printf "warning: sshd (%s) lets root log in with a password (PermitRootLogin yes); set PermitRootLogin prohibit-password (keys only) or no and reload sshd\n", config
        }'
}
