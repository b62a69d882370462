# shellcheck shell=bash
# Sourced by scripts/setup, install-pulumi and build-*: long steps say what they do and keep
# saying it, so a cold setup (minutes of Go builds and pip downloads) is never silent.

# step "what" command [args...]: runs the command, printing "what..." first, a line every
# HL_PROGRESS_SECONDS (default 15) while it runs, and "what: done in N s" (or the failure) after.
# The command's own output goes where it would; its exit code is returned.
step() {
  local what=$1 started pid code=0 ticker
  shift
  started=$(date +%s)
  echo "$what..."
  "$@" &
  pid=$!
  (
    while sleep "${HL_PROGRESS_SECONDS:-15}"; do
      kill -0 "$pid" 2>/dev/null || exit 0
      echo "  ... $what: $(( $(date +%s) - started )) s so far"
    done
  ) &
  ticker=$!
  wait "$pid" || code=$?
  kill "$ticker" 2>/dev/null
  wait "$ticker" 2>/dev/null || true
  if [ "$code" -eq 0 ]; then
    echo "$what: done in $(( $(date +%s) - started )) s"
  else
    echo "$what: failed after $(( $(date +%s) - started )) s (exit $code)" >&2
  fi
  return "$code"
}

# quietly command [args...]: the command with its standard output dropped (errors still show).
quietly() {
  "$@" >/dev/null
}
