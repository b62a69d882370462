# shellcheck shell=sh
# hlfw-release.sh - sourced by hlfw (never run on its own).
# Release directories: the manifest check, the stored copies under releases/HASH,
# and reading the files (tables, sets) a release holds.

# Tables a restore file replaces, e.g. "filter raw".
tables_in() {
    sed -n 's/^\*\([A-Za-z0-9_]*\).*/\1/p' "$1" | tr '\n' ' '
}

builtin_chains() {
    case $1 in
        filter | security) printf 'INPUT FORWARD OUTPUT' ;;
        nat) printf 'PREROUTING INPUT OUTPUT POSTROUTING' ;;
        mangle) printf 'PREROUTING INPUT FORWARD OUTPUT POSTROUTING' ;;
        raw) printf 'PREROUTING OUTPUT' ;;
        *) return 1 ;;
    esac
}

# A table that did not exist must roll back to "empty with ACCEPT policies":
# restoring nothing would leave the release's rules in place.
empty_table() {
    printf '# table %s was empty before the release: restore it empty with ACCEPT policies\n*%s\n' "$1" "$1"
    for _empty_chain in $(builtin_chains "$1"); do
        printf ':%s ACCEPT [0:0]\n' "$_empty_chain"
    done
    printf 'COMMIT\n'
}

# Keep only the given tables of iptables-save output; with "canon" also drop
# comment lines and counters so two saves of the same rules compare equal.
select_tables() {
    awk -v keep=" $1 " -v canon="${2:-}" '
        /^#/ { if (canon != "") next }
        /^\*/ { table = substr($0, 2); on = index(keep, " " table " ") > 0 }
        on {
            if (canon != "" && $0 ~ /^:/) sub(/ \[[0-9]+:[0-9]+\]$/, "")
            print
        }'
}

ipset_names() {
    awk '$1 == "create" { print $2 }' "$1"
}

ipset_exists() {
    ipset list -n "$1" >/dev/null 2>&1
}

# Canonical `ipset save` of the given sets: initval (random per set) and hashsize (the kernel
# grows it while members go in, so two loads of one list can differ) dropped,
# members sorted (hash order differs), per-member counters dropped. Sets made
# with "timeout" are filled at run time by the kernel (e.g. by -j SET), so only
# their create line is compared.
canon_ipsets() {
    awk -v keep=" $1 " '
        $1 == "create" {
            dynamic[$2] = ($0 ~ / timeout [0-9]+/)
            if (index(keep, " " $2 " ") == 0) next
            line = $0; gsub(/ initval 0x[0-9a-fA-F]+/, "", line); gsub(/ hashsize [0-9]+/, "", line)
            print $2 "\t0\t" line; next
        }
        $1 == "add" {
            if (index(keep, " " $2 " ") == 0 || dynamic[$2]) next
            line = $0; gsub(/ packets [0-9]+ bytes [0-9]+/, "", line)
            print $2 "\t1\t" line
        }' | LC_ALL=C sort | cut -f 3-
}

# ipsets_renamed FILE PAIRS CREATES CHUNKS: checks FILE is plain "create"/"add" lines we know how
# to swap in, and writes them with each set renamed to its temporary (hlfw-tmp-N, N in create
# order), in one pass: 100,000 members are megabytes, read once. An add is allowed only to a set
# created above, so no line can reach a live set. The lines go to two files, CHUNKS.1 and
# CHUNKS.2, that two `ipset restore`s load side by side (ipsets_build_start): parsing the members
# is most of the work and takes one core each. Each chunk gets every create line (an add to a set
# the same restore did not create took twice as long) and every other add line.
# Writes " SET=TEMPORARY" pairs to PAIRS, ending with a line "complete" only when the whole file
# was read (a cut-short output must not count as the sets), and FILE's create lines as they are
# to CREATES (the scratch namespace makes the sets from them). Exit 3 with "LINE: TEXT" on
# stderr at the first unsupported line. Runs of "add SET MEMBER" lines to one set, as the
# renderer and `ipset save` write them (single spaces), take the cheap prefix path; anything
# else is split into fields and renamed by regex.
ipsets_renamed() {
    awk -v pairs="$2" -v creates="$3" -v chunk1="$4.1" -v chunk2="$4.2" '
        BEGIN { printf "" >chunk1; printf "" >chunk2; prefix = "\n" }
        index($0, prefix) == 1 {
            if (odd = !odd) print renamed substr($0, cut) >chunk1; else print renamed substr($0, cut) >chunk2
            next
        }
        /^[ \t]*(#|$)/ { next }
        $1 == "create" && NF >= 3 && $2 ~ /^[A-Za-z0-9_.:-]+$/ && length($2) <= 31 && $2 !~ /^hlfw-tmp-/ {
            if (!($2 in tmp)) { tmp[$2] = "hlfw-tmp-" (++n); printf " %s=%s", $2, tmp[$2] >pairs }
            print >creates
            line = $0; sub(/^[ \t]*create[ \t]+[^ \t]+/, "create " tmp[$2], line); print line >chunk1; print line >chunk2
            prefix = "add " $2 " "; renamed = "add " tmp[$2] " "; cut = length(prefix) + 1; next
        }
        $1 == "add" && ($2 in tmp) {
            line = $0; sub(/^[ \t]*add[ \t]+[^ \t]+/, "add " tmp[$2], line)
            if (odd = !odd) print line >chunk1; else print line >chunk2
            prefix = "add " $2 " "; renamed = "add " tmp[$2] " "; cut = length(prefix) + 1; next
        }
        { print NR ": " $0 >"/dev/stderr"; unsupported = 1; exit 3 }
        END { if (!unsupported) printf "\ncomplete\n" >pairs }' "$1"
}

# ipsets_check_and_rename FILE OUT: ipsets_renamed FILE into OUT.renamed.{1,2}, OUT.pairs and
# OUT.creates. Returns 1 (LAST_ERROR set) if FILE has an unsupported line, 2 if it could not be
# rewritten whole.
ipsets_check_and_rename() {
    _icr_status=0
    ipsets_renamed "$1" "$2.pairs" "$2.creates" "$2.renamed" 2>"$2.check" || _icr_status=$?
    if [ "$_icr_status" -eq 3 ]; then
        LAST_ERROR="unsupported line $(head -n 1 "$2.check") (expected 'create NAME TYPE ...' or 'add NAME MEMBER' for a set created above)"
        return 1
    fi
    _icr_complete=
    { IFS= read -r _icr_pairs && IFS= read -r _icr_complete; } 2>/dev/null <"$2.pairs" || _icr_complete=
    if [ "$_icr_status" -ne 0 ] || [ "$_icr_complete" != complete ]; then
        LAST_ERROR="cannot rewrite $1 for the temporary sets: $(tr '\n' ' ' <"$2.check")"
        return 2
    fi
}

rule_count() {
    grep -c '^-A' "$1" || :
}

# copy_checked_release DIR COPY: refuses a release directory that is not a whole release, or
# copies the files its manifest lists to COPY (a new directory), where everything after reads
# them. The checksums are checked on COPY (verify_copied_release), so the bytes checked are the
# bytes applied, read once (a 100,000-member list is megabytes).
copy_checked_release() {
    _manifest_dir=$1
    [ -f "$_manifest_dir/manifest.sha256" ] ||
        die "$EXIT_USAGE" "$_manifest_dir has no manifest.sha256: it is not a release; render it again"
    for _manifest_required in RELEASE rules.v4 rules.v6; do
        [ -f "$_manifest_dir/$_manifest_required" ] ||
            die "$EXIT_USAGE" "release $_manifest_dir lacks $_manifest_required; render it again"
    done
    # Every file but manifest.sha256 and RELEASE must be listed: the names are gathered here and
    # checked in the same awk pass as the manifest's lines (one process, not one per file). A name
    # the manifest's format cannot hold (a space, a newline, ...) can never be listed.
    _manifest_names=
    for _manifest_path in "$_manifest_dir"/* "$_manifest_dir"/.[!.]*; do
        [ -e "$_manifest_path" ] || continue
        _manifest_name=${_manifest_path##*/}
        case $_manifest_name in manifest.sha256 | RELEASE) continue ;; esac
        [ -f "$_manifest_path" ] || die "$EXIT_USAGE" "release $_manifest_dir contains $_manifest_name, which is not a regular file; render it again"
        case $_manifest_name in
            *[!A-Za-z0-9._-]*) die "$EXIT_USAGE" "release $_manifest_dir is corrupt: $_manifest_name is not listed in manifest.sha256; render and copy it again" ;;
        esac
        _manifest_names="$_manifest_names $_manifest_name"
    done
    _manifest_problem=$(awk -v names="$_manifest_names" '{
            sum = substr($0, 1, 64); sep = substr($0, 65, 2); name = substr($0, 67)
            if (length(sum) != 64 || sum !~ /^[0-9a-f]+$/ || (sep != "  " && sep != " *") || name !~ /^[A-Za-z0-9._-]+$/) { print "line " NR ": " $0; bad = 1; exit }
            listed[name] = 1
        }
        END {
            if (bad) exit
            n = split(names, present, " ")
            for (i = 1; i <= n; i++) if (!(present[i] in listed)) { print "unlisted " present[i]; exit }
        }' "$_manifest_dir/manifest.sha256")
    case $_manifest_problem in
        '') ;;
        line*) die "$EXIT_USAGE" "release $_manifest_dir is corrupt: manifest.sha256 ${_manifest_problem} is not 'SHA256  FILE'; render and copy it again" ;;
        *) die "$EXIT_USAGE" "release $_manifest_dir is corrupt: ${_manifest_problem#unlisted } is not listed in manifest.sha256; render and copy it again" ;;
    esac
    _manifest_copy=$2
    mkdir "$_manifest_copy" || die "$EXIT_FAILED" "cannot create $_manifest_copy (disk full?); nothing was changed"
    # One cp for all the files (only [A-Za-z0-9._-] in their names, checked above).
    set --
    for _manifest_name in $(awk '{ print substr($0, 67) }' "$_manifest_dir/manifest.sha256") manifest.sha256 RELEASE; do
        [ -f "$_manifest_dir/$_manifest_name" ] ||
            die "$EXIT_USAGE" "release $_manifest_dir is corrupt, nothing was changed: $_manifest_name: FAILED open or read (listed in manifest.sha256, missing). Render and copy the release again"
        set -- "$@" "$_manifest_dir/$_manifest_name"
    done
    cp -- "$@" "$_manifest_copy/" ||
        die "$EXIT_FAILED" "cannot copy the release $_manifest_dir to $_manifest_copy (disk full?); nothing was changed"
}

# checksums_start COPY: checks COPY's files against its manifest in the background (megabytes
# for a long list), while apply checks what they hold; verify_copied_release waits for it.
CHECKSUMS_PID=
checksums_start() {
    (cd "$1" && exec sha256sum -c --strict --quiet manifest.sha256) >"$WORK_DIR/checksums.out" 2>&1 &
    CHECKSUMS_PID=$!
}

# verify_copied_release DIR COPY: refuses the release DIR unless its copy COPY matches its
# manifest (checksums_start) and the manifest its hash (RELEASE vouches for every file).
verify_copied_release() {
    _vcr_status=0
    wait "$CHECKSUMS_PID" || _vcr_status=$?
    CHECKSUMS_PID=
    if [ "$_vcr_status" -ne 0 ]; then
        die "$EXIT_USAGE" "release $1 is corrupt, nothing was changed: $(tr '\n' ';' <"$WORK_DIR/checksums.out") Render and copy the release again"
    fi
    _manifest_hash=$(release_hash_of "$2")
    _manifest_sum=$(sha256sum <"$2/manifest.sha256")
    _manifest_sum=${_manifest_sum%% *}
    case $_manifest_sum in
        "$_manifest_hash"*) ;;
        *) die "$EXIT_USAGE" "release $1 is corrupt, nothing was changed: RELEASE says $_manifest_hash but manifest.sha256 hashes to $_manifest_sum; render and copy the release again" ;;
    esac
}

release_hash_of() {
    # The first line, blanks and CRs dropped; read in the shell (apply reads it three times),
    # `tr` only for a line that holds something other than a hash's characters.
    _rho_hash=
    IFS= read -r _rho_hash <"$1/RELEASE" || :
    case $_rho_hash in
        *[!A-Za-z0-9._-]*) _rho_hash=$(printf '%s' "$_rho_hash" | tr -d ' \t\r') ;;
    esac
    valid_hash "$_rho_hash" ||
        die "$EXIT_USAGE" "$1/RELEASE does not hold a release hash (got '$_rho_hash'); render it again"
    printf '%s' "$_rho_hash"
}

# store_release DIR HASH COPY: under the lock, puts COPY (the checked copy of DIR that
# copy_checked_release made) at releases/HASH, unless an intact copy of the same release is
# there already. A release DIR that changed while this apply waited for the lock (its manifest
# is not the one checked), or whose copy is not HASH (it changed before the copy), is refused.
store_release() {
    _store_src=$1
    _store_hash=$2
    _store_copy=$3
    _store_dest="$STATE_DIR/releases/$_store_hash"
    cmp -s "$_store_src/manifest.sha256" "$_store_copy/manifest.sha256" || release_changed_while_waiting "$_store_hash"
    stored_release_is "$_store_copy" "$_store_hash"
    if [ -d "$_store_dest" ] && cmp -s "$_store_dest/manifest.sha256" "$_store_copy/manifest.sha256" &&
        (cd "$_store_dest" && sha256sum -c --strict --quiet manifest.sha256 >/dev/null 2>&1); then
        return 0
    fi
    rm -rf "$_store_dest"
    mv "$_store_copy" "$_store_dest" || die "$EXIT_FAILED" "cannot move the release into $_store_dest"
    log "stored release $_store_hash in $_store_dest"
}

release_changed_while_waiting() {
    die "$EXIT_USAGE" "release $1 changed while this apply waited for the lock (its manifest no longer hashes to $1); nothing was changed. Render and copy the release again"
}

# stored_release_is DIR HASH: dies unless DIR's RELEASE says HASH and its manifest hashes to it.
stored_release_is() {
    _sri_sum=$(sha256sum <"$1/manifest.sha256")
    _sri_sum=${_sri_sum%% *}
    case $_sri_sum in
        "$2"*) [ "$(release_hash_of "$1")" = "$2" ] && return 0 ;;
    esac
    release_changed_while_waiting "$2"
}

# Keeps the newest KEEP_RELEASES release copies, and always the active and
# previous ones (a rollback or a re-apply may need them).
KEEP_RELEASES=10
prune_releases() {
    _prune_keep=" $(state_get active_release) $(state_get previous) $(state_get release) "
    _prune_count=0
    # shellcheck disable=SC2045 # names are release hashes (checked below); ls -t sorts newest first
    for _prune_hash in $(ls -1t "$STATE_DIR/releases" 2>/dev/null); do
        valid_hash "$_prune_hash" || continue
        _prune_count=$((_prune_count + 1))
        case $_prune_keep in *" $_prune_hash "*) continue ;; esac
        [ "$_prune_count" -gt "$KEEP_RELEASES" ] || continue
        rm -rf "${STATE_DIR:?}/releases/$_prune_hash" || warn "could not remove the old release copy $_prune_hash"
    done
}
