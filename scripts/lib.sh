# Shared by scripts/*: find the checkout, install what is missing, build.
# Sourced, not run.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

say() { printf 'mmlab: %s\n' "$*" >&2; }

# Swift: on PATH, or the toolchain in /opt/swift.
ensure_swift() {
  if ! command -v swift >/dev/null 2>&1 && [ -x /opt/swift/usr/bin/swift ]; then
    export PATH="/opt/swift/usr/bin:$PATH"
  fi
  command -v swift >/dev/null 2>&1 && return
  say "Swift 6 is not installed. Install a toolchain from https://www.swift.org/install/linux/ and put its usr/bin on PATH."
  exit 1
}

# Installs the Debian packages named (those not installed yet) with apt-get,
# as root or through sudo; otherwise says exactly what to install.
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
      sudo="sudo"
    else
      say "missing packages: ${missing[*]}"
      say "install them with: sudo apt-get install -y ${missing[*]}"
      exit 1
    fi
  fi
  say "installing ${missing[*]}"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# What building and running mmlab needs.
ensure_setup() {
  ensure_swift
  ensure_packages liblua5.4-dev pkg-config
}

# Builds quietly; shows the compiler's output only when the build fails.
build() {
  local log
  log="$(mktemp)"
  if ! swift build "$@" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    say "build failed"
    exit 1
  fi
  rm -f "$log"
}
