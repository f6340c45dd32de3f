#!/usr/bin/env bash
# Debian packages the browser and shader tests use. Installs them when missing and we are root;
# otherwise says what to install (those tests are then skipped, or fail under CI=true).
set -u
need=()
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || need+=(chromium)
command -v glslangValidator >/dev/null 2>&1 || need+=(glslang-tools)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
else
  echo "note: install ${need[*]} (e.g. sudo apt-get install ${need[*]}) for the browser and shader tests"
fi
exit 0
