#!/usr/bin/env bash
# Install what ops/ needs from Debian (or Ubuntu): the `prometheus` package (prometheus,
# promtool, the console library prom.lib) and `chromium` (headless screenshots of the
# consoles in tests/test_ops.py). Idempotent: does nothing when all are present.
#
# Debian's package enables and (on a host running systemd) starts a system-wide
# prometheus.service on :9090, scraping nothing of ours. When this script is the one that
# installs the package, it stops and disables that service, so `make ops` can run its own
# Prometheus (ops/run-prometheus.sh) without a port clash; a Prometheus that was already
# installed is left alone. In a container (no systemd, policy-rc.d refusing starts) the
# service never runs; disabling it there is harmless.
#
# prom.lib ships as an example under /usr/share/doc/prometheus; images that exclude docs
# from dpkg (path-exclude) lose it, so it is then extracted from the package archive into
# /usr/local/share/prometheus/console_libraries, where ops/run-prometheus.sh also looks.
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
SUDO=()
if [[ $(id -u) -ne 0 ]]; then
    SUDO=(sudo)
fi

# Where ops/run-prometheus.sh finds prom.lib (first hit wins); keep the two lists in sync.
PROM_LIB_DIRS=(
    /usr/share/prometheus/console_libraries
    /etc/prometheus/console_libraries
    /usr/share/doc/prometheus/examples/console_libraries
    /usr/local/share/prometheus/console_libraries
)

have_prom_lib() {
    local dir
    for dir in "${PROM_LIB_DIRS[@]}"; do
        [[ -f $dir/prom.lib ]] && return 0
    done
    return 1
}

packages=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || packages+=(prometheus)
command -v chromium >/dev/null || packages+=(chromium)

if ((${#packages[@]})); then
    echo "ops/install.sh: installing ${packages[*]} with apt-get"
    "${SUDO[@]}" apt-get update -qq
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${packages[@]}"
    if [[ " ${packages[*]} " == *" prometheus "* ]]; then
        if [[ -d /run/systemd/system ]]; then
            "${SUDO[@]}" systemctl disable --now prometheus.service || true
        elif command -v systemctl >/dev/null; then
            "${SUDO[@]}" systemctl disable prometheus.service >/dev/null 2>&1 || true
        fi
        if [[ -x /etc/init.d/prometheus && ! -d /run/systemd/system ]]; then
            "${SUDO[@]}" /etc/init.d/prometheus stop >/dev/null 2>&1 || true
        fi
    fi
fi

if ! have_prom_lib; then
    echo "ops/install.sh: prom.lib missing (docs excluded from dpkg?); extracting it"
    work=$(mktemp -d)
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && apt-get download prometheus >/dev/null)
    dpkg-deb --fsys-tarfile "$work"/prometheus_*.deb |
        tar -x -C "$work" ./usr/share/doc/prometheus/examples/console_libraries
    "${SUDO[@]}" install -D -m 0644 -t /usr/local/share/prometheus/console_libraries \
        "$work"/usr/share/doc/prometheus/examples/console_libraries/*.lib
fi

have_prom_lib
echo "ops/install.sh: $(prometheus --version 2>&1 | head -1); $(chromium --version 2>/dev/null)"
