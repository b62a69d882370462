# shellcheck shell=sh
# hlfw-netfilter.sh - sourced by hlfw (never run on its own).
# Loading and reading netfilter: iptables-restore, atomic ipset swaps, and the scratch
# network namespace where a release is tested and canonicalised without touching the live one.

# run_restore TOOL FILE: full replace of the tables in FILE (no --noflush).
run_restore() {
    if ! "$1" <"$2" 2>"$WORK_DIR/restore.err"; then
        LAST_ERROR="$1 < $2 failed: $(tr '\n' ' ' <"$WORK_DIR/restore.err")"
        return 1
    fi
}

# Loads an ipset restore file without a moment where a set is half-filled:
# each set is built under a temporary name, then swapped in (or renamed when new).
ipsets_restore_atomic() {
    _ira_file=$1
    _ira_pairs=
    _ira_index=0
    for _ira_set in $(ipset_names "$_ira_file"); do
        _ira_index=$((_ira_index + 1))
        ipset destroy "hlfw-tmp-$_ira_index" 2>/dev/null || :
        _ira_pairs="$_ira_pairs $_ira_set=hlfw-tmp-$_ira_index"
    done
    [ -n "$_ira_pairs" ] || return 0
    awk -v pairs="$_ira_pairs" '
        BEGIN { n = split(pairs, p, " "); for (i = 1; i <= n; i++) { split(p[i], kv, "="); tmp[kv[1]] = kv[2] } }
        ($1 == "create" || $1 == "add") && ($2 in tmp) { sub(/^[ \t]*(create|add)[ \t]+[^ \t]+/, $1 " " tmp[$2]) }
        { print }' "$_ira_file" >"$WORK_DIR/ipsets.tmp-names" || {
        LAST_ERROR="cannot rewrite $_ira_file"
        return 1
    }
    if ! ipset restore <"$WORK_DIR/ipsets.tmp-names" 2>"$WORK_DIR/ipset.err"; then
        LAST_ERROR="ipset restore < $_ira_file failed: $(tr '\n' ' ' <"$WORK_DIR/ipset.err")"
        ipsets_destroy_temporaries "$_ira_pairs"
        return 1
    fi
    for _ira_pair in $_ira_pairs; do
        _ira_set=${_ira_pair%%=*}
        _ira_tmp=${_ira_pair#*=}
        if ipset_exists "$_ira_set"; then
            if ! ipset swap "$_ira_tmp" "$_ira_set" 2>"$WORK_DIR/ipset.err"; then
                LAST_ERROR="ipset swap $_ira_tmp $_ira_set failed (did the set's type change? a set in use cannot change type): $(tr '\n' ' ' <"$WORK_DIR/ipset.err")"
                ipsets_destroy_temporaries "$_ira_pairs"
                return 1
            fi
            ipset destroy "$_ira_tmp" 2>/dev/null || warn "could not destroy the temporary set $_ira_tmp"
        elif ! ipset rename "$_ira_tmp" "$_ira_set" 2>"$WORK_DIR/ipset.err"; then
            LAST_ERROR="ipset rename $_ira_tmp $_ira_set failed: $(tr '\n' ' ' <"$WORK_DIR/ipset.err")"
            ipsets_destroy_temporaries "$_ira_pairs"
            return 1
        fi
    done
}

ipsets_destroy_temporaries() {
    for _idt_pair in $1; do
        ipset destroy "${_idt_pair#*=}" 2>/dev/null || :
    done
}

# Runs this script inside a throw-away network namespace (`unshare --net`),
# so that testing or canonicalising a release never touches the live firewall,
# and ipsets the rules reference can be created there first.
in_scratch_namespace() {
    unshare --net /bin/sh "$SELF" _scratch "$@"
}

# Internal: `_scratch test|save DIR OUT`, run by in_scratch_namespace only.
cmd_scratch() {
    _scratch_mode=$1
    _scratch_dir=$2
    _scratch_out=$3
    if [ -f "$_scratch_dir/ipsets" ] && ! ipset restore <"$_scratch_dir/ipsets" 2>"$_scratch_out/scratch.err"; then
        printf 'ipsets: %s\n' "$(tr '\n' ' ' <"$_scratch_out/scratch.err")" >&2
        exit "$EXIT_FAILED"
    fi
    for _scratch_family in v4 v6; do
        if [ "$_scratch_family" = v4 ]; then _scratch_tool=iptables; else _scratch_tool=ip6tables; fi
        if [ "$_scratch_mode" = test ]; then
            _scratch_status=0
            "$_scratch_tool-restore" --test <"$_scratch_dir/rules.$_scratch_family" 2>"$_scratch_out/scratch.err" || _scratch_status=$?
        else
            _scratch_status=0
            "$_scratch_tool-restore" <"$_scratch_dir/rules.$_scratch_family" 2>"$_scratch_out/scratch.err" || _scratch_status=$?
            [ "$_scratch_status" -ne 0 ] || "$_scratch_tool-save" >"$_scratch_out/release.$_scratch_family" 2>"$_scratch_out/scratch.err" || _scratch_status=$?
        fi
        if [ "$_scratch_status" -ne 0 ]; then
            printf 'rules.%s: %s\n' "$_scratch_family" "$(tr '\n' ' ' <"$_scratch_out/scratch.err")" >&2
            exit "$EXIT_FAILED"
        fi
    done
    if [ "$_scratch_mode" = save ]; then
        if [ -f "$_scratch_dir/ipsets" ]; then
            ipset save >"$_scratch_out/release.ipsets" 2>"$_scratch_out/scratch.err" || {
                printf 'ipsets: ipset save failed: %s\n' "$(tr '\n' ' ' <"$_scratch_out/scratch.err")" >&2
                exit "$EXIT_FAILED"
            }
        else
            : >"$_scratch_out/release.ipsets"
        fi
    fi
}

# `iptables-restore --test` of both families, with the release's sets created
# in a scratch namespace. Falls back to testing in the live namespace when
# namespaces are unavailable, which only works if every set already exists.
test_release() {
    _test_dir=$1
    if in_scratch_namespace test "$_test_dir" "$WORK_DIR" 2>"$WORK_DIR/test.err"; then
        return 0
    fi
    if unshare --net true 2>/dev/null; then
        LAST_ERROR=$(tr '\n' ' ' <"$WORK_DIR/test.err")
        return 1
    fi
    warn "cannot create a scratch network namespace (unshare --net); testing with --test in the live namespace"
    if [ -f "$_test_dir/ipsets" ]; then
        for _test_set in $(ipset_names "$_test_dir/ipsets"); do
            if ! ipset_exists "$_test_set"; then
                LAST_ERROR="ipset $_test_set does not exist yet and no scratch namespace is available to test rules that use it"
                return 1
            fi
        done
    fi
    for _test_family in v4 v6; do
        if [ "$_test_family" = v4 ]; then _test_tool=iptables-restore; else _test_tool=ip6tables-restore; fi
        if ! "$_test_tool" --test <"$_test_dir/rules.$_test_family" 2>"$WORK_DIR/test.err"; then
            LAST_ERROR="rules.$_test_family: $(tr '\n' ' ' <"$WORK_DIR/test.err")"
            return 1
        fi
    done
}

# Writes WORK_DIR/{release,live}.{v4,v6,ipsets}.canon and reports which differ
# in COMPARE_DIFFERENT (e.g. "v4 ipsets"). Returns 1 if they cannot be compared.
compare_live_with_release() {
    _cmp_dir=$1
    COMPARE_DIFFERENT=
    if ! in_scratch_namespace save "$_cmp_dir" "$WORK_DIR" 2>"$WORK_DIR/save.err"; then
        LAST_ERROR="cannot load the release into a scratch network namespace: $(tr '\n' ' ' <"$WORK_DIR/save.err")"
        return 1
    fi
    for _cmp_family in v4 v6; do
        if [ "$_cmp_family" = v4 ]; then _cmp_tool=iptables-save; else _cmp_tool=ip6tables-save; fi
        _cmp_tables=$(tables_in "$_cmp_dir/rules.$_cmp_family")
        select_tables "$_cmp_tables" canon <"$WORK_DIR/release.$_cmp_family" >"$WORK_DIR/release.$_cmp_family.canon"
        if ! "$_cmp_tool" >"$WORK_DIR/live.$_cmp_family" 2>"$WORK_DIR/save.err"; then
            LAST_ERROR="$_cmp_tool failed: $(tr '\n' ' ' <"$WORK_DIR/save.err")"
            return 1
        fi
        select_tables "$_cmp_tables" canon <"$WORK_DIR/live.$_cmp_family" >"$WORK_DIR/live.$_cmp_family.canon"
        cmp -s "$WORK_DIR/release.$_cmp_family.canon" "$WORK_DIR/live.$_cmp_family.canon" ||
            COMPARE_DIFFERENT="$COMPARE_DIFFERENT $_cmp_family"
    done
    if [ -f "$_cmp_dir/ipsets" ]; then
        _cmp_sets=$(ipset_names "$_cmp_dir/ipsets" | tr '\n' ' ')
        canon_ipsets "$_cmp_sets" <"$WORK_DIR/release.ipsets" >"$WORK_DIR/release.ipsets.canon"
        : >"$WORK_DIR/live.ipsets"
        for _cmp_set in $_cmp_sets; do
            ipset save "$_cmp_set" >>"$WORK_DIR/live.ipsets" 2>/dev/null || :
        done
        canon_ipsets "$_cmp_sets" <"$WORK_DIR/live.ipsets" >"$WORK_DIR/live.ipsets.canon"
        cmp -s "$WORK_DIR/release.ipsets.canon" "$WORK_DIR/live.ipsets.canon" ||
            COMPARE_DIFFERENT="$COMPARE_DIFFERENT ipsets"
    fi
    return 0
}

show_diff() {
    if command -v diff >/dev/null 2>&1; then
        diff -u --label "$3" --label "$4" "$1" "$2" >&2 || :
    else
        printf '%s and %s differ (diff is not installed)\n' "$3" "$4" >&2
    fi
}
