# shellcheck shell=sh
# hlfw-owned.sh - sourced by hlfw (never run on its own).
# What the project owns in a table, and the restore input that replaces exactly that: its
# HL-* chains (all their rules), its jump rules into them from other chains, the policies of
# the built-in chains its release declares, and the chains it only needs to exist (e.g.
# DOCKER-USER). Every other chain, rule, policy and counter belongs to someone else (Docker,
# fail2ban, the operator) and stays as it is, in its place.
#
# All functions read iptables-save text. Loads use `iptables-restore --noflush`: a declared
# HL-* chain is flushed and refilled, a built-in chain only gets its policy, nothing else is
# flushed; one restore per family is one kernel transaction.

# A rule's target: the last -j/-g (a comment comes before it in iptables-save output).
OWNED_AWK_LIB='
function target_of(line,    n, i, f, t) {
    n = split(line, f, " "); t = ""
    for (i = 1; i < n; i++) if (f[i] == "-j" || f[i] == "-g") t = f[i + 1]
    return t
}
function owned_chain(chain) { return chain ~ /^HL-/ }
'

# release_policies FILE: "table chain policy" for each built-in chain the release file
# declares with a policy (":INPUT DROP [0:0]"): the only policies the project sets.
release_policies() {
    awk '/^\*/ { table = substr($1, 2) } /^:/ && $2 != "-" { print table, substr($1, 2), $2 }' "$1"
}

# release_ensured FILE: "table chain" for each chain the release declares that is not its
# own (DOCKER-USER): it must exist for the release's jump, but it is never flushed.
release_ensured() {
    awk '/^\*/ { table = substr($1, 2) } /^:/ && $2 == "-" && $1 !~ /^:HL-/ { print table, substr($1, 2) }' "$1"
}

# check_owned_rules_file FILE: refuses a rules file that would touch what is not the
# project's: rules only in HL-* chains or as jumps into them, no other commands.
check_owned_rules_file() {
    _cor_bad=$(awk "$OWNED_AWK_LIB"'
        /^[ \t]*(#|$)/ || /^COMMIT[ \t]*$/ || /^\*[a-z]+[ \t]*$/ { next }
        /^:[^ ]+ [A-Z-]+( \[[0-9]+:[0-9]+\])?[ \t]*$/ { next }
        $1 == "-A" && (owned_chain($2) || owned_chain(target_of($0))) { next }
        { print NR ": " $0; exit }' "$1")
    if [ -n "$_cor_bad" ]; then
        LAST_ERROR="line $_cor_bad: a release may only fill its own HL-* chains and jump into them (no rules in other chains, no -I/-D/-F/-X/-N/-P)"
        return 1
    fi
}

# owned_view POLICIES ENSURED < SAVE: the part of an iptables-save the project owns, in a
# stable order, as save-format text (two views compare with cmp; drift describes them).
owned_view() {
    awk -v pf="$1" -v ef="$2" "$OWNED_AWK_LIB"'
        BEGIN {
            while ((getline line < pf) > 0) { split(line, f, " "); policy_of[f[1], f[2]] = 1 }
            while ((getline line < ef) > 0) { split(line, f, " "); ensured[f[1], f[2]] = 1 }
        }
        /^#/ || /^COMMIT/ { next }
        /^\*/ { table = substr($1, 2); if (!(table in seen)) { seen[table] = 1; order[++tables] = table }; next }
        /^:/ {
            chain = substr($1, 2)
            if ((table, chain) in policy_of) head[table] = head[table] ":" chain " " $2 "\n"
            else if (owned_chain(chain)) head[table] = head[table] ":" chain " -\n"
            else if ((table, chain) in ensured) head[table] = head[table] ":" chain " -\n"
            next
        }
        $1 == "-A" && owned_chain($2) { body[table] = body[table] $0 "\n"; next }
        $1 == "-A" && owned_chain(target_of($0)) { jumps[table] = jumps[table] $0 "\n" }
        END {
            for (i = 1; i <= tables; i++) {
                t = order[i]
                if (head[t] body[t] jumps[t] == "") continue
                printf "*%s\n%s%s%s", t, head[t], body[t], jumps[t]
            }
        }'
}

# owned_restore_input MODE TARGET POLICIES ENSURED LIVE: the --noflush restore input that turns
# the owned part of LIVE (an iptables-save) into the owned part of TARGET (an iptables-save:
# the release loaded in a scratch namespace, or a rollback snapshot), leaving the rest alone.
# MODE release: missing jumps are appended (after the rules other tools put first);
# MODE snapshot: they go back where the snapshot had them, and a policy the snapshot lacks
# (its table did not exist) goes back to ACCEPT. Surplus jumps and HL-* chains the target
# does not have are removed.
owned_restore_input() {
    awk -v mode="$1" -v pf="$3" -v ef="$4" "$OWNED_AWK_LIB"'
        BEGIN {
            while ((getline line < pf) > 0) {
                split(line, f, " "); policies[f[1]] = policies[f[1]] " " f[2]; want_table[f[1]] = 1
            }
            while ((getline line < ef) > 0) { split(line, f, " "); ensure[f[1]] = ensure[f[1]] " " f[2] }
        }
        FNR == 1 { side = (FILENAME == ARGV[1]) ? "target" : "live" }
        /^#/ || /^COMMIT/ { next }
        /^\*/ { table = substr($1, 2); if (side == "target") want_table[table] = 1; next }
        /^:/ {
            chain = substr($1, 2); exists[side, table, chain] = 1; policy[side, table, chain] = $2
            if (owned_chain(chain)) {
                hl[side, table] = hl[side, table] " " chain
                if (side == "live") want_table[table] = 1
            }
            next
        }
        $1 == "-A" {
            chain = $2; length_of[side, table, chain]++
            if (owned_chain(chain)) {
                if (side == "target") fill[table] = fill[table] $0 "\n"
                next
            }
            if (!owned_chain(target_of($0))) next
            count[side, table, $0]++
            if (side == "live") { want_table[table] = 1; if (count[side, table, $0] == 1) live_jumps[table] = live_jumps[table] "\n" $0 }
            else { n = ++target_jumps[table]; jump_line[table, n] = $0; jump_chain[table, n] = chain; jump_at[table, n] = length_of[side, table, chain] }
        }
        END {
            for (table in want_table) {
                printf "*%s\n", table
                n = split(policies[table], names, " ")
                for (i = 1; i <= n; i++) {
                    value = policy["target", table, names[i]]
                    if (value == "") value = "ACCEPT"
                    printf ":%s %s [0:0]\n", names[i], value
                }
                n = split(hl["target", table], names, " ")
                for (i = 1; i <= n; i++) { printf ":%s - [0:0]\n", names[i]; keep[table, names[i]] = 1 }
                n = split(ensure[table], names, " ")
                for (i = 1; i <= n; i++) if (!exists["live", table, names[i]]) { printf ":%s - [0:0]\n", names[i]; exists["live", table, names[i]] = 1 }
                if (mode == "snapshot")
                    for (i = 1; i <= target_jumps[table]; i++) {
                        c = jump_chain[table, i]
                        if (!exists["live", table, c]) { printf ":%s - [0:0]\n", c; exists["live", table, c] = 1 }
                    }
                n = split(live_jumps[table], lines, "\n")
                for (i = 2; i <= n; i++) {
                    surplus = count["live", table, lines[i]] - count["target", table, lines[i]]
                    split(lines[i], f, " ")
                    for (k = 1; k <= surplus; k++) { print "-D" substr(lines[i], 3); length_of["live", table, f[2]]-- }
                }
                n = split(hl["live", table], names, " ")
                for (i = 1; i <= n; i++) if (!((table, names[i]) in keep)) print "-F " names[i]
                for (i = 1; i <= n; i++) if (!((table, names[i]) in keep)) print "-X " names[i]
                printf "%s", fill[table]
                for (i = 1; i <= target_jumps[table]; i++) {
                    line = jump_line[table, i]; c = jump_chain[table, i]
                    if (added[table, line] + count["live", table, line] >= count["target", table, line]) continue
                    added[table, line]++
                    if (mode == "snapshot") {
                        at = jump_at[table, i]
                        if (at > length_of["live", table, c] + 1) at = length_of["live", table, c] + 1
                        printf "-I %s %d%s\n", c, at, substr(line, length("-A " c) + 1)
                    } else print line
                    length_of["live", table, c]++
                }
                print "COMMIT"
            }
        }' "$2" "$5"
}

# foreign_warnings < SAVE: one line per rule another tool put before the project's jump in the
# same chain that decides on its own: ACCEPT lets traffic past the policy, DROP/REJECT may cut
# off what the policy allows (an admin's SSH, a service). Rules after the jump never see a
# packet the project's chains decide, and chains without a jump of ours are not ours to judge.
foreign_warnings() {
    awk "$OWNED_AWK_LIB"'
        /^\*/ { table = substr($1, 2); next }
        $1 != "-A" || owned_chain($2) { next }
        {
            key = table SUBSEP $2; t = target_of($0)
            if (jumped[key]) next
            if (owned_chain(t)) { jumped[key] = 1; printf "%s", before[key]; next }
            where = (table == "filter" ? "" : table " ") $2
            if (t == "ACCEPT") before[key] = before[key] "a rule before the project'"'"'s jump in " where " lets traffic past the policy: " $0 "\n"
            else if (t == "DROP" || t == "REJECT") before[key] = before[key] "a rule before the project'"'"'s jump in " where " may cut off what the policy allows: " $0 "\n"
        }'
}

# docker_running FAMILY: Docker's chains are in that family's live filter table.
docker_running() {
    if [ "$1" = v4 ]; then _dr_tool=iptables-save; else _dr_tool=ip6tables-save; fi
    "$_dr_tool" -t filter 2>/dev/null | grep -q '^:DOCKER-USER '
}

# make_effective_release DIR HASH DECIDE: writes WORK_DIR/effective/{rules.v4,rules.v6,ipsets}:
# what the host is meant to run of release DIR, and sets DOCKER_HOOK (the families it holds
# the Docker hook for). A release rendered with firewall.docker: auto ships the hook apart
# (docker-hook.vN); it belongs to the effective rules where Docker's chains exist: DECIDE
# "now" looks at the live rules (apply), "recorded" reuses the apply's decision for HASH when
# the state names it (confirm, verify, drift: the same files that apply loaded).
make_effective_release() {
    _mer_dir=$1
    _mer_out="$WORK_DIR/effective"
    mkdir -p "$_mer_out" || die "$EXIT_FAILED" "cannot create $_mer_out"
    DOCKER_HOOK=
    _mer_recorded=
    if [ "$3" = recorded ] && [ "$(state_get release)" = "$2" ] && grep -q '^docker_hook=' "$STATE_DIR/state" 2>/dev/null; then
        _mer_recorded=1
    fi
    for _mer_family in v4 v6; do
        cp "$_mer_dir/rules.$_mer_family" "$_mer_out/rules.$_mer_family" ||
            die "$EXIT_FAILED" "cannot copy rules.$_mer_family to $_mer_out (disk full?)"
        [ -f "$_mer_dir/docker-hook.$_mer_family" ] || continue
        if [ -n "$_mer_recorded" ]; then
            case " $(state_get docker_hook) " in *" $_mer_family "*) ;; *) continue ;; esac
        else
            docker_running "$_mer_family" || continue
        fi
        cat "$_mer_dir/docker-hook.$_mer_family" >>"$_mer_out/rules.$_mer_family" ||
            die "$EXIT_FAILED" "cannot write $_mer_out/rules.$_mer_family (disk full?)"
        DOCKER_HOOK="${DOCKER_HOOK:+$DOCKER_HOOK }$_mer_family"
    done
    rm -f "$_mer_out/ipsets"
    if [ -f "$_mer_dir/ipsets" ]; then
        # A link where it can (the same file system): a long list is megabytes, and nothing
        # writes to either name.
        ln "$_mer_dir/ipsets" "$_mer_out/ipsets" 2>/dev/null || cp "$_mer_dir/ipsets" "$_mer_out/ipsets" ||
            die "$EXIT_FAILED" "cannot copy ipsets to $_mer_out (disk full?)"
    fi
}
