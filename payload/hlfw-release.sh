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

# Checks the ipsets file is plain "create"/"add" lines we know how to swap in.
check_ipsets_file() {
    _cif_bad=$(awk '
        /^[ \t]*(#|$)/ { next }
        $1 == "create" && NF >= 3 && $2 ~ /^[A-Za-z0-9_.:-]+$/ && length($2) <= 31 && $2 !~ /^hlfw-tmp-/ { made[$2] = 1; next }
        $1 == "add" && ($2 in made) { next }
        { print NR ": " $0; exit }' "$1")
    if [ -n "$_cif_bad" ]; then
        LAST_ERROR="unsupported line $_cif_bad (expected 'create NAME TYPE ...' or 'add NAME MEMBER' for a set created above)"
        return 1
    fi
}

rule_count() {
    grep -c '^-A' "$1" || :
}

# Refuses a release directory whose manifest does not match, before anything is touched.
verify_manifest() {
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
    if ! _manifest_check_out=$(cd "$_manifest_dir" && sha256sum -c --strict --quiet manifest.sha256 2>&1); then
        die "$EXIT_USAGE" "release $_manifest_dir is corrupt, nothing was changed: $(printf '%s' "$_manifest_check_out" | tr '\n' ';') Render and copy the release again"
    fi
    # The release hash is the start of sha256(manifest.sha256), so RELEASE vouches for every file.
    _manifest_hash=$(release_hash_of "$_manifest_dir")
    _manifest_sum=$(sha256sum <"$_manifest_dir/manifest.sha256")
    _manifest_sum=${_manifest_sum%% *}
    case $_manifest_sum in
        "$_manifest_hash"*) ;;
        *) die "$EXIT_USAGE" "release $_manifest_dir is corrupt, nothing was changed: RELEASE says $_manifest_hash but manifest.sha256 hashes to $_manifest_sum; render and copy the release again" ;;
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

# store_release DIR HASH: copies a release verify_manifest checked to releases/HASH (temp dir +
# rename), then checks the copy under the lock: its files against its manifest and its manifest
# against HASH. Everything after this reads the copy, so checking it is what makes a release
# that changed (or was swapped) while this apply waited for the lock harmless: it is refused.
store_release() {
    _store_src=$1
    _store_hash=$2
    _store_dest="$STATE_DIR/releases/$_store_hash"
    if [ -d "$_store_dest" ] && { [ "$(cd "$_store_dest" && pwd -P)" = "$(cd "$_store_src" && pwd -P)" ] ||
        cmp -s "$_store_dest/manifest.sha256" "$_store_src/manifest.sha256"; } &&
        (cd "$_store_dest" && sha256sum -c --strict --quiet manifest.sha256 >/dev/null 2>&1); then
        stored_release_is "$_store_dest" "$_store_hash"
        return 0
    fi
    _store_tmp_dest="$STATE_DIR/releases/.incoming.$$"
    rm -rf "$_store_tmp_dest"
    mkdir "$_store_tmp_dest" || die "$EXIT_FAILED" "cannot create $_store_tmp_dest"
    # One cp for all the files (verify_manifest allowed only [A-Za-z0-9._-] in their names).
    set --
    for _store_name in $(awk '{ print substr($0, 67) }' "$_store_src/manifest.sha256") manifest.sha256 RELEASE; do
        set -- "$@" "$_store_src/$_store_name"
    done
    cp -- "$@" "$_store_tmp_dest/" ||
        die "$EXIT_FAILED" "cannot copy the release $_store_src to $_store_tmp_dest (disk full?); nothing was changed"
    if ! (cd "$_store_tmp_dest" && sha256sum -c --strict --quiet manifest.sha256 >/dev/null 2>&1); then
        rm -rf "$_store_tmp_dest"
        die "$EXIT_USAGE" "the copy of release $_store_src does not match its manifest: the release changed while this apply waited for the lock, or a disk error; nothing was changed. Render and copy the release again"
    fi
    stored_release_is "$_store_tmp_dest" "$_store_hash"
    rm -rf "$_store_dest"
    mv "$_store_tmp_dest" "$_store_dest" || die "$EXIT_FAILED" "cannot move the release into $_store_dest"
    log "stored release $_store_hash in $_store_dest"
}

# stored_release_is DIR HASH: dies unless DIR's RELEASE says HASH and its manifest hashes to it.
stored_release_is() {
    _sri_sum=$(sha256sum <"$1/manifest.sha256")
    _sri_sum=${_sri_sum%% *}
    case $_sri_sum in
        "$2"*) [ "$(release_hash_of "$1")" = "$2" ] && return 0 ;;
    esac
    [ "${1##*/}" != ".incoming.$$" ] || rm -rf "$1"
    die "$EXIT_USAGE" "release $2 changed while this apply waited for the lock (its manifest no longer hashes to $2); nothing was changed. Render and copy the release again"
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
