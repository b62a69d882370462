# shellcheck shell=sh
# Sourced by the scripts that need root (the lab and the netfilter tests make network namespaces):
#   . "$here/scripts/lib/as-root.sh"; as_root "why root is needed" "$@"
# From a root shell it does nothing, so no sudo is needed there. Otherwise the calling script
# runs again through sudo, keeping PATH (Go, a user's own pulumi) and the Pulumi settings.
as_root() {
  as_root_why=$1
  shift
  [ "$(id -u)" -eq 0 ] && return 0
  if ! command -v sudo >/dev/null 2>&1; then
    echo "$(basename "$0"): $as_root_why, which needs root, and sudo is not installed: run it from a root shell" >&2
    exit 2
  fi
  echo "$(basename "$0"): $as_root_why, which needs root: running it again through sudo" >&2
  exec sudo --preserve-env=PULUMI_BACKEND_URL,PULUMI_HOME,PULUMI_ACCESS_TOKEN,PULUMI_CONFIG_PASSPHRASE,PULUMI_CONFIG_PASSPHRASE_FILE,HL_USE_BUILT_PULUMI \
    env "PATH=$PATH" "$0" "$@"
}
