# shellcheck shell=sh
# hlfw-drift.sh - sourced by hlfw (never run on its own).
# `hlfw drift`: read-only, is the host running release HASH as confirmed? Prints
# state=, release=, in_sync=yes|no, then one "drift: <reason>" line per difference, short
# enough for a `pulumi preview` diff (the deployer's refresh reads it back), then one
# "warning: <text>" line per rule of another tool that bypasses or shadows the policy (not
# drift: the project judges only what it owns, see hlfw-owned.sh).

# A refresh must not hang behind an apply: wait briefly, then say the host is busy (exit 4).
DRIFT_LOCK_WAIT_SECONDS=10

# describe_rules_drift FAMILY RELEASE_CANON LIVE_CANON HASH: one line when the canonical
# iptables-save texts differ (rules counted as a multiset, then order), nothing when equal.
describe_rules_drift() {
    cmp -s "$2" "$3" && return 0
    awk -v family="$1" -v hash="$4" '
        # Drops the -m comment part of a rule and shows it after the rule, so the sample reads
        # like the rule an operator typed, and still says which rule of ours it was.
        function sample(key,    table, line, comment) {
            table = substr(key, 1, index(key, "|") - 1); line = substr(key, index(key, "|") + 1)
            if (match(line, / -m comment --comment ("[^"]*"|[^ ]+)/)) {
                comment = substr(line, RSTART + 22, RLENGTH - 22)
                line = substr(line, 1, RSTART - 1) substr(line, RSTART + RLENGTH)
                line = line "  # " comment
            }
            return (table == "filter" ? "" : "-t " table " ") line
        }
        function plural(n, word) { return n " " word (n == 1 ? "" : "s") }
        FNR == 1 { side = (FILENAME == ARGV[1]) ? "release" : "live"; pos = 0 }
        /^\*/ { table = substr($0, 2); seen[side, table] = 1; next }
        /^COMMIT$/ { next }
        /^:/ {
            chain = substr($1, 2); key = table "|" chain
            policy[side, key] = $2
            if (side == "release") chain_at[++chains] = key
            else live_chain_at[++live_chains] = key
            next
        }
        {
            key = table "|" $0; count[side, key]++; pos++
            at[side, pos] = key; total[side] = pos
            if ($1 == "-A") {
                chain_key = table "|" $2
                if (side == "release" && !in_chain[side, chain_key]) rule_chain_at[++rule_chains] = chain_key
                in_chain[side, chain_key]++
            }
        }
        END {
            reasons = ""
            for (i = 1; i <= chains; i++) {
                key = chain_at[i]; name = substr(key, index(key, "|") + 1); table = substr(key, 1, index(key, "|") - 1)
                where = (table == "filter" ? "" : table " ")
                if (!seen["live", table]) { if (!told[table]++) reasons = reasons "; table " table " is missing"; continue }
                if (!(("live", key) in policy)) reasons = reasons "; chain " where name " is missing"
                else if (policy["release", key] != policy["live", key])
                    reasons = reasons "; policy of " where name " is " policy["live", key] ", the release says " policy["release", key]
            }
            for (i = 1; i <= live_chains; i++) {
                key = live_chain_at[i]; table = substr(key, 1, index(key, "|") - 1)
                if (!(("release", key) in policy))
                    reasons = reasons "; +chain " (table == "filter" ? "" : table " ") substr(key, index(key, "|") + 1) " not in the release"
            }
            extra = 0; missing = 0; first_extra = ""; first_missing = ""
            for (i = 1; i <= total["live"]; i++) {
                key = at["live", i]
                if (used["live", key]++ < count["live", key] - count["release", key]) {
                    extra++; if (first_extra == "") first_extra = key
                }
            }
            for (i = 1; i <= total["release"]; i++) {
                key = at["release", i]
                if (used["release", key]++ < count["release", key] - count["live", key]) {
                    missing++; if (first_missing == "") first_missing = key
                }
            }
            flushed = ""
            for (i = 1; i <= rule_chains; i++) {
                key = rule_chain_at[i]
                if (in_chain["release", key] > 0 && in_chain["live", key] == 0 && seen["live", substr(key, 1, index(key, "|") - 1)])
                    flushed = flushed (flushed == "" ? "" : ", ") substr(key, index(key, "|") + 1)
            }
            if (extra) reasons = reasons "; +" plural(extra, "rule") " not in the release (" sample(first_extra) ")"
            if (missing) reasons = reasons "; -" plural(missing, "rule") " of the release missing (" \
                (flushed != "" ? "chain " flushed " flushed?" : sample(first_missing)) ")"
            if (reasons == "") {
                for (i = 1; i <= total["release"] && at["release", i] == at["live", i]; i++) ;
                if (i <= total["release"]) reasons = "; rules in another order than in the release (first at: " sample(at["live", i]) ")"
                else reasons = "; chains declared in another order than in the release"
            }
            printf "live %s rules differ from release %s: %s\n", family, hash, substr(reasons, 3)
        }' "$2" "$3"
}

# describe_ipsets_drift RELEASE_CANON LIVE_CANON: one line per set of the release that differs
# (canon_ipsets output: create lines, then sorted members; dynamic sets have no members there).
describe_ipsets_drift() {
    cmp -s "$1" "$2" && return 0
    awk '
        function plural(n, word) { return n " " word (n == 1 ? "" : "s") }
        FNR == 1 { side = (FILENAME == ARGV[1]) ? "release" : "live" }
        $1 == "create" { created[side, $2] = $0; if (side == "release") names[++sets] = $2; next }
        $1 == "add" {
            member = $3; key = $2 SUBSEP member; has[side, key] = 1
            order[side, $2, ++members[side, $2]] = member
        }
        END {
            for (i = 1; i <= sets; i++) {
                name = names[i]
                if (!(("live", name) in created)) { print "ipset " name " is missing"; continue }
                reasons = ""
                if (created["live", name] != created["release", name])
                    reasons = reasons "; created as \"" created["live", name] "\", the release says \"" created["release", name] "\""
                extra = 0; missing = 0; first_extra = ""; first_missing = ""
                for (j = 1; j <= members["live", name]; j++) {
                    member = order["live", name, j]
                    if (!(("release", name SUBSEP member) in has)) { extra++; if (first_extra == "") first_extra = member }
                }
                for (j = 1; j <= members["release", name]; j++) {
                    member = order["release", name, j]
                    if (!(("live", name SUBSEP member) in has)) { missing++; if (first_missing == "") first_missing = member }
                }
                if (extra) reasons = reasons "; +" plural(extra, "member") " not in the release (" first_extra ")"
                if (missing) reasons = reasons "; -" plural(missing, "member") " of the release missing (" first_missing ")"
                if (reasons != "") print "ipset " name " differs: " substr(reasons, 3)
            }
        }' "$1" "$2"
}

# describe_state_drift HASH: why the recorded state is not "release HASH confirmed".
describe_state_drift() {
    _dsd_state=$(state_get state)
    _dsd_release=$(state_get release)
    case ${_dsd_state:-none} in
        active)
            [ "$_dsd_release" = "$1" ] ||
                printf 'state is active for release %s: release %s is not what the host runs\n' "$_dsd_release" "$1"
            ;;
        pending)
            if [ "$_dsd_release" = "$1" ]; then
                printf 'state is pending: release %s is live but not confirmed (it rolls back at %s)\n' "$1" "$(state_get deadline)"
            else
                printf 'state is pending for release %s: release %s is not what the host runs\n' "$_dsd_release" "$1"
            fi
            ;;
        rolled-back)
            printf 'state is rolled-back (reason=%s): release %s is not what the host runs\n' "$(state_get reason)" "$1"
            ;;
        *) printf 'state is %s: release %s was never confirmed on this host\n' "${_dsd_state:-none}" "$1" ;;
    esac
}

cmd_drift() {
    release_argument drift "$@"
    _drift_hash=$RELEASE_ARGUMENT
    require_tools iptables-save ip6tables-save unshare
    require_known_os
    _drift_dir="$STATE_DIR/releases/$_drift_hash"
    make_work_dir
    lock_acquire "$DRIFT_LOCK_WAIT_SECONDS"
    _drift_found="$WORK_DIR/drift"
    : >"$WORK_DIR/warnings"
    describe_state_drift "$_drift_hash" >"$_drift_found"
    if [ ! -f "$_drift_dir/RELEASE" ]; then
        printf 'release %s is not on this host\n' "$_drift_hash" >>"$_drift_found"
    else
        make_effective_release "$_drift_dir" "$_drift_hash" recorded
        for _drift_family in v4 v6; do
            if [ -f "$_drift_dir/docker-hook.$_drift_family" ] && docker_running "$_drift_family"; then
                case " $DOCKER_HOOK " in
                    *" $_drift_family "*) ;;
                    *) printf '%s: Docker runs but its published ports are not under the policy: release %s was applied before Docker'"'"'s chains were there (firewall.docker: auto)\n' \
                        "$_drift_family" "$_drift_hash" >>"$_drift_found" ;;
                esac
            fi
        done
        _drift_dir="$WORK_DIR/effective"
        compare_live_with_release "$_drift_dir" ||
            die "$EXIT_FAILED" "cannot compare the live rules with release $_drift_hash: $LAST_ERROR"
        for _drift_family in v4 v6; do
            describe_rules_drift "$_drift_family" "$WORK_DIR/release.$_drift_family.canon" \
                "$WORK_DIR/live.$_drift_family.canon" "$_drift_hash" >>"$_drift_found"
        done
        if [ -f "$_drift_dir/ipsets" ]; then
            describe_ipsets_drift "$WORK_DIR/release.ipsets.canon" "$WORK_DIR/live.ipsets.canon" >>"$_drift_found"
        fi
        for _drift_pair in $(persist_pairs); do
            _drift_name=${_drift_pair%%=*}
            _drift_dest=${_drift_pair#*=}
            case $(persisted_status "$_drift_dir" "$_drift_name" "$_drift_dest") in
                different) printf 'persisted %s differs from release %s\n' "$_drift_dest" "$_drift_hash" ;;
                missing) printf 'persisted %s is missing (release %s has %s)\n' "$_drift_dest" "$_drift_hash" "$_drift_name" ;;
                unexpected) printf 'persisted %s exists but release %s has no %s\n' "$_drift_dest" "$_drift_hash" "$_drift_name" ;;
            esac
        done >>"$_drift_found"
    fi
    _drift_state=$(state_get state)
    info "state=${_drift_state:-none}"
    info "release=$(state_get release)"
    if [ ! -s "$_drift_found" ]; then
        info "in_sync=yes"
        sed 's/^/warning: /' "$WORK_DIR/warnings"
        return 0
    fi
    info "in_sync=no"
    sed 's/^/drift: /' "$_drift_found"
    sed 's/^/warning: /' "$WORK_DIR/warnings"
    log "drift from release $_drift_hash: $(tr '\n' ';' <"$_drift_found")"
    exit "$EXIT_FAILED"
}
