#!/usr/bin/env bash
# Install what building and testing llmpress needs on Debian 12 (run as root).
# Packages already present are left alone; nothing is installed from outside Debian
# except the optional Python test oracles (PyPI's `gguf` and `safetensors`), whose absence
# only skips tests.
set -euo pipefail
pkgs=(build-essential autoconf automake libtool pkg-config autoconf-archive
      libglib2.0-dev libjson-glib-dev zlib1g-dev libopenblas-dev liblapacke-dev
      libvulkan-dev mesa-vulkan-drivers vulkan-tools glslc spirv-tools vulkan-validationlayers
      python3 python3-pip help2man)
# The packages among the arguments that are not installed yet.
not_installed() {
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || echo "$p"
  done
}
mapfile -t missing < <(not_installed "${pkgs[@]}")
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "install-deps: missing packages: ${missing[*]} (run as root to install them)" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# clang with libFuzzer, for the fuzz targets (make fuzz, .ci/run); the
# sanitizer build needs only gcc's libasan/libubsan, part of build-essential.
fuzz_pkgs=(clang libclang-rt-14-dev)
mapfile -t fuzz_missing < <(not_installed "${fuzz_pkgs[@]}")
if [ ${#fuzz_missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${fuzz_missing[@]}" >/dev/null; } \
      || echo "install-deps: ${fuzz_missing[*]} unavailable: make fuzz cannot run" >&2
  else
    echo "install-deps: ${fuzz_missing[*]} missing (run as root to install them): make fuzz cannot run" >&2
  fi
fi
# Headless Chromium renders `llmpress report`'s page in tests/test-report;
# without it that one case skips, so a failure here is not an error.
mapfile -t web_missing < <(not_installed chromium)
if [ ${#web_missing[@]} -gt 0 ] && [ "$(id -u)" = 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium >/dev/null; } \
    || echo "install-deps: chromium unavailable: the report page's rendering test skips" >&2
fi
# Optional oracles for the GGUF and safetensors tests; a failure here is not an error.
for mod in gguf safetensors; do
  if ! python3 -c "import $mod" 2>/dev/null; then
    python3 -m pip install -q "$mod" 2>/dev/null || python3 -m pip install -q --break-system-packages "$mod" 2>/dev/null \
      || echo "install-deps: python '$mod' unavailable: the cross-check tests will skip" >&2
  fi
done
