#!/bin/sh
# Installs the Debian 12 packages MMSB builds with, if any are missing.
# Idempotent: when everything is present it installs nothing and needs no network.
set -eu
pkgs="clang-19 llvm-19-dev llvm-19-tools clang-22 llvm-22-dev llvm-22-tools libffi-dev libxxhash-dev libzstd-dev cmake ninja-build pkg-config"
missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "install-deps: installing$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends $missing
