# shellcheck shell=sh
# hlfw-install.sh - sourced by hlfw (never run on its own).
# `hlfw install-deps`: the packages that load the rules at boot (Debian/Ubuntu, Amazon
# Linux), installed only when missing and never saving the live rules.

dpkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || :)" = "install ok installed" ]
}

apt_has_candidate() {
    _ahc_candidate=$(apt-cache policy "$1" 2>/dev/null | sed -n 's/^ *Candidate: *//p' | head -n 1)
    [ -n "$_ahc_candidate" ] && [ "$_ahc_candidate" != "(none)" ]
}

install_deps_debian() {
    require_tools dpkg-query apt-get apt-cache
    _deb_missing=
    for _deb_pkg in iptables ipset netfilter-persistent iptables-persistent; do
        dpkg_installed "$_deb_pkg" || _deb_missing="$_deb_missing $_deb_pkg"
    done
    _deb_want_ipset_persistent=
    if ! dpkg_installed ipset-persistent; then
        if apt_has_candidate ipset-persistent; then
            _deb_missing="$_deb_missing ipset-persistent"
        else
            _deb_want_ipset_persistent=maybe
        fi
    fi
    if [ -z "$_deb_missing" ]; then
        if [ -n "$_deb_want_ipset_persistent" ]; then
            warn "ipset-persistent is not packaged for this release: ipsets in /etc/iptables/ipsets will not be loaded at boot by netfilter-persistent"
        fi
        info "install-deps: iptables, ipset and netfilter-persistent are already installed; nothing to install"
        return 0
    fi
    # Never let the package save the live rules: we persist release files only.
    require_tools debconf-set-selections
    if ! printf '%s\n' \
        'iptables-persistent iptables-persistent/autosave_v4 boolean false' \
        'iptables-persistent iptables-persistent/autosave_v6 boolean false' |
        debconf-set-selections; then
        die "$EXIT_FAILED" "debconf-set-selections failed: cannot preseed iptables-persistent (autosave off); nothing was installed"
    fi
    info "install-deps: updating package lists"
    if ! DEBIAN_FRONTEND=noninteractive apt-get -q update >&2; then
        die "$EXIT_FAILED" "apt-get update failed: check the network and /etc/apt/sources.list, then run 'hlfw install-deps' again"
    fi
    if [ -n "$_deb_want_ipset_persistent" ] && apt_has_candidate ipset-persistent; then
        _deb_missing="$_deb_missing ipset-persistent"
    fi
    info "install-deps: installing$_deb_missing"
    # shellcheck disable=SC2086 # _deb_missing is a list of package names
    if ! DEBIAN_FRONTEND=noninteractive apt-get -q -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        install $_deb_missing >&2; then
        die "$EXIT_FAILED" "apt-get install$_deb_missing failed (see above); fix apt and run 'hlfw install-deps' again"
    fi
    log "installed$_deb_missing"
    info "install-deps: installed$_deb_missing"
}

rpm_installed() {
    rpm -q "$1" >/dev/null 2>&1
}

install_deps_amzn() {
    require_tools rpm
    _amzn_missing=
    for _amzn_pkg in iptables-nft iptables-services ipset ipset-service; do
        rpm_installed "$_amzn_pkg" || _amzn_missing="$_amzn_missing $_amzn_pkg"
    done
    if [ -n "$_amzn_missing" ]; then
        if command -v dnf >/dev/null 2>&1; then _amzn_pm=dnf; else _amzn_pm=yum; fi
        require_tools "$_amzn_pm"
        info "install-deps: installing$_amzn_missing"
        # shellcheck disable=SC2086 # _amzn_missing is a list of package names
        if ! "$_amzn_pm" -y -q install $_amzn_missing >&2; then
            die "$EXIT_FAILED" "$_amzn_pm install$_amzn_missing failed (see above); fix the repositories and run 'hlfw install-deps' again"
        fi
        log "installed$_amzn_missing"
    else
        info "install-deps: iptables-services, iptables-nft, ipset and ipset-service are already installed; nothing to install"
    fi
    if ! command -v systemctl >/dev/null 2>&1 || [ ! -d /run/systemd/system ]; then
        warn "systemd is not running: enable iptables, ip6tables and ipset at boot by hand"
        return 0
    fi
    # ipset must load before the rules that reference its sets.
    for _amzn_unit in ipset iptables ip6tables; do
        if ! systemctl is-enabled --quiet "$_amzn_unit" 2>/dev/null; then
            systemctl enable "$_amzn_unit" >&2 ||
                die "$EXIT_FAILED" "systemctl enable $_amzn_unit failed: the persisted rules would not load at boot"
            info "install-deps: enabled $_amzn_unit.service"
        fi
    done
}

cmd_install_deps() {
    [ $# -eq 0 ] || usage_error "install-deps takes no arguments"
    case $(os_flavour) in
        debian) install_deps_debian ;;
        amzn) install_deps_amzn ;;
        *) die "$EXIT_FAILED" "unsupported OS (${HLFW_OS_RELEASE:-/etc/os-release} is neither Debian/Ubuntu nor Amazon Linux 2023): install iptables, ipset and a boot-time loader by hand" ;;
    esac
}
