#!/usr/bin/env bash
# Install what dicom-node needs on Debian (as root, or with sudo available):
#   scripts/setup.sh          the node itself: a virtual environment in .venv with the package
#   scripts/setup.sh --test   also the test extras and the DICOM peers the tests speak to
# Idempotent: what is present is not installed again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
want_test=0
[ "${1:-}" = "--test" ] && want_test=1

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  local sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
}

python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "dicom-node needs Python 3.11 or newer" >&2; exit 2; }
python3 -c 'import venv, ensurepip' 2>/dev/null || apt_install python3-venv
if [ $want_test -eq 1 ]; then
  apt_install dcmtk dicom3tools openssl orthanc postgresql  # postgresql: tests/pg.py starts a throwaway cluster
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
extras=""; [ $want_test -eq 1 ] && extras="[test]"
.venv/bin/pip install -q --disable-pip-version-check -e ".${extras}"
