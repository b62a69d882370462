# shellcheck shell=sh
# hlfw-netfilter.sh - sourced by hlfw (never run on its own).
# Loading and reading netfilter: iptables-restore, atomic ipset swaps, and the scratch
# network namespace where a release is tested and canonicalised without touching the live one.

# run_restore TOOL FILE [FLAG]: full replace of the tables in FILE (unless FLAG is --noflush).
run_restore() {
    # shellcheck disable=SC2086 # FLAG is one word or empty
    if ! "$1" ${3:-} <"$2" 2>"$WORK_DIR/restore.err"; then
        LAST_ERROR="$1 < $2 failed: $(tr '\n' ' ' <"$WORK_DIR/restore.err")"
        return 1
    fi
}

# Loads an ipset restore file without a moment where a set is half-filled:
# each set is built under a temporary name, then swapped in (or renamed when new).
ipsets_restore_atomic() {
    ipsets_build_temporaries "$1" && ipsets_swap_in
}

# ipsets_build_temporaries FILE: fills FILE's sets under temporary names (hlfw-tmp-N) in the
# live namespace. Nothing refers to them, so building them touches no traffic: a bad member is
# refused with nothing changed. Records the "SET=TEMPORARY" pairs in IPSET_TEMPORARIES and their
# number in IPSET_COUNT; IPSET_BUILDING tells cleanup that hlfw-tmp-* sets may be left to
# destroy. Files of its own (restore-ipsets.*): a rollback before apply's build (of a pending
# release it supersedes) must not overwrite what apply's check of the release's sets wrote
# (WORK_DIR/ipsets.*).
IPSET_TEMPORARIES=
IPSET_COUNT=0
IPSET_BUILDING=
IPSET_BUILD_PIDS=
ipsets_build_temporaries() {
    if ! ipsets_check_and_rename "$1" "$WORK_DIR/restore-ipsets"; then
        LAST_ERROR="ipsets: $LAST_ERROR"
        return 1
    fi
    ipsets_build_start "$WORK_DIR/restore-ipsets" "$1" && ipsets_build_finish
}

# ipsets_build_start PREFIX SOURCE: fills the temporaries from the files ipsets_check_and_rename
# wrote for SOURCE (PREFIX.renamed.{1,2}, PREFIX.pairs) with two `ipset restore`s side by side
# in the background, and returns at once; ipsets_build_finish waits for them. Filling 100,000
# members is most of an apply, so apply tests the rules in the scratch namespace meanwhile (a
# namespace of its own: the two touch nothing in common). Both chunks create every set (see
# ipsets_renamed), so both run with -exist: whichever comes second finds the set made. That is
# why no hlfw-tmp-* set may be left from before (it would be taken with its old members): those
# a killed run left are destroyed first (the lock is ours: none is in use), and the build is
# refused if one stays.
ipsets_build_start() {
    ipsets_destroy_temporaries
    if [ -n "$IPSET_LEFT" ]; then
        LAST_ERROR="the temporary sets$IPSET_LEFT left by an earlier run cannot be destroyed (is a rule using one?); destroy them by hand"
        return 1
    fi
    IPSET_BUILDING=1
    IPSET_BUILD_PREFIX=$1
    IPSET_BUILD_SOURCE=$2
    ipset restore -exist <"$1.renamed.1" 2>"$WORK_DIR/ipset.err.1" &
    IPSET_BUILD_PIDS=$!
    ipset restore -exist <"$1.renamed.2" 2>"$WORK_DIR/ipset.err.2" &
    IPSET_BUILD_PIDS="$IPSET_BUILD_PIDS $!"
}

ipsets_build_finish() {
    _ibf_status=0
    for _ibf_pid in $IPSET_BUILD_PIDS; do
        wait "$_ibf_pid" || _ibf_status=$?
    done
    IPSET_BUILD_PIDS=
    ipsets_built "$IPSET_BUILD_SOURCE" "$_ibf_status" "$IPSET_BUILD_PREFIX.pairs"
}

# ipsets_built SOURCE STATUS PAIRS: the end of a build; returns 1 (LAST_ERROR set, temporaries
# destroyed) unless both `ipset restore`s succeeded. PAIRS is whole: every build starts from
# files ipsets_check_and_rename accepted only with its "complete" line.
ipsets_built() {
    if [ "$2" -ne 0 ]; then
        LAST_ERROR="ipset restore < $1 failed: $(ipsets_build_error "$1")"
        ipsets_destroy_temporaries
        return 1
    fi
    IFS= read -r IPSET_TEMPORARIES <"$3"
    IPSET_COUNT=0
    for _ib_pair in $IPSET_TEMPORARIES; do
        IPSET_COUNT=$((IPSET_COUNT + 1))
    done
}

# ipsets_build_error SOURCE: what to tell about a failed build. The chunks' line numbers are not
# SOURCE's, so SOURCE is loaded once more, whole and as it is, into a scratch network namespace,
# where `ipset restore` names its own line; the chunks' messages when that loads (the failure
# was the live namespace's) or there is no scratch namespace.
ipsets_build_error() {
    if ! unshare --net ipset restore -exist <"$1" >/dev/null 2>"$WORK_DIR/ipset.err" &&
        [ -s "$WORK_DIR/ipset.err" ] && unshare --net true 2>/dev/null; then
        tr '\n' ' ' <"$WORK_DIR/ipset.err"
    else
        cat "$WORK_DIR/ipset.err.1" "$WORK_DIR/ipset.err.2" | tr '\n' ' '
    fi
}

# Stops a build ipsets_build_start left running (the run is ending early: cleanup).
ipsets_build_stop() {
    [ -n "${IPSET_BUILD_PIDS:-}" ] || return 0
    # shellcheck disable=SC2086 # process ids, one word each
    kill $IPSET_BUILD_PIDS 2>/dev/null || :
    for _ibs_pid in $IPSET_BUILD_PIDS; do
        wait "$_ibs_pid" 2>/dev/null || :
    done
    IPSET_BUILD_PIDS=
}

# Puts the sets the last build (ipsets_build_finish) made in place, each in one `ipset swap`
# (or a rename when the set is new).
ipsets_swap_in() {
    for _isi_pair in $IPSET_TEMPORARIES; do
        _isi_set=${_isi_pair%%=*}
        _isi_tmp=${_isi_pair#*=}
        if ipset_exists "$_isi_set"; then
            if ! ipset swap "$_isi_tmp" "$_isi_set" 2>"$WORK_DIR/ipset.err"; then
                LAST_ERROR="ipset swap $_isi_tmp $_isi_set failed (did the set's type change? a set in use cannot change type): $(tr '\n' ' ' <"$WORK_DIR/ipset.err")"
                ipsets_destroy_temporaries
                return 1
            fi
            ipset destroy "$_isi_tmp" 2>/dev/null || warn "could not destroy the temporary set $_isi_tmp"
        elif ! ipset rename "$_isi_tmp" "$_isi_set" 2>"$WORK_DIR/ipset.err"; then
            LAST_ERROR="ipset rename $_isi_tmp $_isi_set failed: $(tr '\n' ' ' <"$WORK_DIR/ipset.err")"
            ipsets_destroy_temporaries
            return 1
        fi
    done
    IPSET_TEMPORARIES=
    IPSET_BUILDING=
}

# Destroys every hlfw-tmp-* set: what a build left before its swap (or, after a failed swap,
# the old members), or a killed run's. Only hlfw runs holding the lock make them.
# IPSET_LEFT names those that could not be destroyed.
IPSET_LEFT=
ipsets_destroy_temporaries() {
    IPSET_LEFT=
    for _idt_set in $(ipset list -n 2>/dev/null); do
        case $_idt_set in hlfw-tmp-*) ipset destroy "$_idt_set" 2>/dev/null || IPSET_LEFT="$IPSET_LEFT $_idt_set" ;; esac
    done
    IPSET_TEMPORARIES=
    IPSET_BUILDING=
}

# Runs this script inside a throw-away network namespace (`unshare --net`),
# so that testing or canonicalising a release never touches the live firewall,
# and ipsets the rules reference can be created there first.
in_scratch_namespace() {
    unshare --net /bin/sh "$SELF" _scratch "$@"
}

# Internal: `_scratch MODE DIR OUT`, run by in_scratch_namespace only: load the release into
# the empty scratch namespace (as boot would: --noflush) and save it to OUT/release.*.
# MODE save: the sets with their members, saved too (what compares read); MODE rules: the
# sets empty (iptables-restore only needs them to exist), no ipset save: apply tests the
# members where it builds them (ipsets_build_temporaries), so loading them twice buys nothing.
cmd_scratch() {
    _scratch_mode=$1
    _scratch_dir=$2
    _scratch_out=$3
    : >"$_scratch_out/release.ipsets"
    if [ -f "$_scratch_dir/ipsets" ]; then
        # MODE rules: the create lines apply's check of the sets wrote (ipsets_check_and_rename).
        _scratch_sets="$_scratch_dir/ipsets"
        [ "$_scratch_mode" != rules ] || _scratch_sets="$_scratch_out/ipsets.creates"
        # -exist: as apply's build (ipsets_build_start) and the boot-time loaders load them.
        if ! ipset restore -exist <"$_scratch_sets" 2>"$_scratch_out/scratch.err"; then
            printf 'ipsets: %s\n' "$(tr '\n' ' ' <"$_scratch_out/scratch.err")" >&2
            exit "$EXIT_FAILED"
        fi
    fi
    for _scratch_family in v4 v6; do
        if [ "$_scratch_family" = v4 ]; then _scratch_tool=iptables; else _scratch_tool=ip6tables; fi
        if ! "$_scratch_tool-restore" --noflush <"$_scratch_dir/rules.$_scratch_family" 2>"$_scratch_out/scratch.err" ||
            ! "$_scratch_tool-save" >"$_scratch_out/release.$_scratch_family" 2>"$_scratch_out/scratch.err"; then
            printf 'rules.%s: %s\n' "$_scratch_family" "$(tr '\n' ' ' <"$_scratch_out/scratch.err")" >&2
            exit "$EXIT_FAILED"
        fi
    done
    [ "$_scratch_mode" = save ] && [ -f "$_scratch_dir/ipsets" ] || return 0
    if ! ipset save >"$_scratch_out/release.ipsets" 2>"$_scratch_out/scratch.err"; then
        printf 'ipsets: ipset save failed: %s\n' "$(tr '\n' ' ' <"$_scratch_out/scratch.err")" >&2
        exit "$EXIT_FAILED"
    fi
}

# prepare_release DIR [MODE]: loads the release into a scratch namespace (its sets first) and
# saves it back: a real load is the strongest test, and the save is the release in the
# kernel's own words, which is what live rules are compared with and what the restore input is
# made from. Writes WORK_DIR/release.{v4,v6,ipsets} and, from the release files, WORK_DIR/
# {policies,ensured}.{v4,v6}. MODE rules (apply) loads the sets empty and leaves
# release.ipsets empty (see cmd_scratch); the default, save, loads and saves their members.
# Without namespaces it falls back to `--test` in the live namespace (every set must already
# exist) and to the release files themselves.
prepare_release() {
    _prep_dir=$1
    for _prep_family in v4 v6; do
        release_policies "$_prep_dir/rules.$_prep_family" >"$WORK_DIR/policies.$_prep_family"
        release_ensured "$_prep_dir/rules.$_prep_family" >"$WORK_DIR/ensured.$_prep_family"
    done
    if in_scratch_namespace "${2:-save}" "$_prep_dir" "$WORK_DIR" 2>"$WORK_DIR/test.err"; then
        return 0
    fi
    if unshare --net true 2>/dev/null; then
        LAST_ERROR=$(tr '\n' ' ' <"$WORK_DIR/test.err")
        return 1
    fi
    warn "cannot create a scratch network namespace (unshare --net); testing with --test in the live namespace"
    if [ -f "$_prep_dir/ipsets" ]; then
        for _prep_set in $(ipset_names "$_prep_dir/ipsets"); do
            if ! ipset_exists "$_prep_set"; then
                LAST_ERROR="ipset $_prep_set does not exist yet and no scratch namespace is available to test rules that use it"
                return 1
            fi
        done
        cp "$_prep_dir/ipsets" "$WORK_DIR/release.ipsets"
    fi
    for _prep_family in v4 v6; do
        if [ "$_prep_family" = v4 ]; then _prep_tool=iptables-restore; else _prep_tool=ip6tables-restore; fi
        if ! "$_prep_tool" --test --noflush <"$_prep_dir/rules.$_prep_family" 2>"$WORK_DIR/test.err"; then
            LAST_ERROR="rules.$_prep_family: $(tr '\n' ' ' <"$WORK_DIR/test.err")"
            return 1
        fi
        cp "$_prep_dir/rules.$_prep_family" "$WORK_DIR/release.$_prep_family"
    done
}

# save_live FAMILY FILE: the live iptables-save (every table) of that family.
save_live() {
    if [ "$1" = v4 ]; then _sl_tool=iptables-save; else _sl_tool=ip6tables-save; fi
    if ! "$_sl_tool" >"$2" 2>"$WORK_DIR/save.err"; then
        LAST_ERROR="$_sl_tool failed: $(tr '\n' ' ' <"$WORK_DIR/save.err")"
        return 1
    fi
}

# Writes WORK_DIR/{release,live}.{v4,v6,ipsets}.canon (the project's part of each: see
# owned_view) and WORK_DIR/warnings (rules of other tools that bypass or shadow the policy),
# and reports which parts differ in COMPARE_DIFFERENT (e.g. "v4 ipsets"). Returns 1 if they
# cannot be compared.
compare_live_with_release() {
    _cmp_dir=$1
    COMPARE_DIFFERENT=
    if ! prepare_release "$_cmp_dir"; then
        LAST_ERROR="cannot load the release into a scratch network namespace: $LAST_ERROR"
        return 1
    fi
    : >"$WORK_DIR/warnings"
    for _cmp_family in v4 v6; do
        save_live "$_cmp_family" "$WORK_DIR/live.$_cmp_family" || return 1
        for _cmp_side in release live; do
            owned_view "$WORK_DIR/policies.$_cmp_family" "$WORK_DIR/ensured.$_cmp_family" \
                <"$WORK_DIR/$_cmp_side.$_cmp_family" >"$WORK_DIR/$_cmp_side.$_cmp_family.canon"
        done
        cmp -s "$WORK_DIR/release.$_cmp_family.canon" "$WORK_DIR/live.$_cmp_family.canon" ||
            COMPARE_DIFFERENT="$COMPARE_DIFFERENT $_cmp_family"
        foreign_warnings <"$WORK_DIR/live.$_cmp_family" | sed "s/^/$_cmp_family: /" >>"$WORK_DIR/warnings"
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

# load_owned FAMILY MODE TARGET POLICIES ENSURED: replaces the project's part of the live
# rules with TARGET's in one `--noflush` restore (see owned_restore_input).
load_owned() {
    if [ "$1" = v4 ]; then _lo_tool=iptables-restore; else _lo_tool=ip6tables-restore; fi
    save_live "$1" "$WORK_DIR/before-load.$1" || return 1
    owned_restore_input "$2" "$3" "$4" "$5" "$WORK_DIR/before-load.$1" >"$WORK_DIR/load.$1" || {
        LAST_ERROR="cannot build the restore input for $1"
        return 1
    }
    if ! "$_lo_tool" --noflush <"$WORK_DIR/load.$1" 2>"$WORK_DIR/restore.err"; then
        LAST_ERROR="$_lo_tool --noflush failed: $(tr '\n' ' ' <"$WORK_DIR/restore.err")"
        return 1
    fi
}

show_diff() {
    if command -v diff >/dev/null 2>&1; then
        diff -u --label "$3" --label "$4" "$1" "$2" >&2 || :
    else
        printf '%s and %s differ (diff is not installed)\n' "$3" "$4" >&2
    fi
}
