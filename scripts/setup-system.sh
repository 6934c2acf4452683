#!/usr/bin/env bash
# Installs the system packages the tests and benches use (Debian 12). Idempotent: installs only
# what is missing. Needs root (CI and these machines run as root); otherwise prints the command.
set -euo pipefail
need=()
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v casync >/dev/null || need+=(casync)
command -v mke2fs >/dev/null || need+=(e2fsprogs)
[ -x /usr/bin/time ] || need+=(time)
# The runtime: QEMU (TCG boots), libnbd's nbdinfo/nbdcopy (NBD tests and bench), busybox and xz for
# the test appliance (scripts/fixtures/make-appliance.sh).
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v nbdcopy >/dev/null || need+=(libnbd-bin)
[ -x /bin/busybox ] || need+=(busybox-static)
command -v xz >/dev/null || need+=(xz-utils)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "missing system packages: run  sudo apt-get update && sudo apt-get install -y ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
