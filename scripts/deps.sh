#!/usr/bin/env bash
# Installs the Debian bookworm packages vsrbus needs to build, test and benchmark.
# This is the one list of packages in the project; `make`, `make run` and `make test` call it.
# Idempotent: packages already installed are skipped, and nothing is fetched when all are there.
set -euo pipefail

PACKAGES=(
  # build
  build-essential cmake pkg-config
  # libraries linked into vsrbus
  libxxhash-dev        # XXH3-64 header checksums
  liburing-dev         # io_uring backend
  libngtcp2-dev libngtcp2-crypto-gnutls-dev  # QUIC client plane
  libgnutls28-dev      # TLS 1.3 for QUIC, certificates
  libinih-dev          # INI config files
  librust-blake3-dev   # official BLAKE3 C sources (c/ directory), built by CMake
  libhttp-parser-dev   # HTTP requests of the metrics endpoint (no .pc file: CMake find_library)
  libwslay-dev         # WebSocket frames of the WS / WSS transports (no .pc file either)
  # tests
  libcmocka-dev b3sum gnutls-bin ngtcp2-client iproute2 strace
  tshark               # the Wireshark dissector test (contrib/wireshark)
  python3-websockets   # an independent WebSocket client for the WS / WSS tests
  chromium             # the browser test of the WS listener's page (it_ws_browser.sh)
  prometheus jq        # promtool check metrics (it_metrics.sh); jq parses the JSON logs
  # fuzzing and sanitizers
  clang-14 libclang-rt-14-dev
  # benchmark baselines and plots
  libzmq3-dev libnng-dev ngtcp2-server gnuplot-nox linux-perf
  iperf3               # the loopback limit row of `make bench` (bench/iperf3.sh)
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "deps.sh: installing ${missing[*]}" >&2
if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: not root; run as root: apt-get install -y ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
