#!/usr/bin/env bash
# Run Prometheus next to a running `bourse serve`:
#
#   ops/run-prometheus.sh [BOURSE_HTTP_ADDRESS] [LISTEN_ADDRESS]
#
# BOURSE_HTTP_ADDRESS  host:port of Bourse's HTTP server (GET /metrics), default
#                      127.0.0.1:8080 (bourse.toml's [http]).
# LISTEN_ADDRESS       where Prometheus serves its UI, API and the Bourse consoles,
#                      default 127.0.0.1:9090: open http://LISTEN_ADDRESS/consoles/overview.html
# PROMETHEUS_STORAGE   (environment) the TSDB directory to use and keep; by default a
#                      temporary one, removed on exit (history starts fresh every run).
# BOURSE_METRICS_TOKEN (environment) Bourse's [http] metrics_token, if it has one: written
#                      to an owner-only file in the working directory that the scrape
#                      presents as its bearer token (never on a command line).
#
# It assembles a working directory: ops/prometheus/prometheus.yml with the target line
# pointed at BOURSE_HTTP_ADDRESS (and the self-scrape at LISTEN_ADDRESS), the rules, and the
# console libraries (Prometheus's prom.lib from the installed package plus
# ops/console_libraries/*.lib). Runs in the foreground; SIGINT/SIGTERM stop Prometheus and
# remove the temporary files. Needs the `prometheus` package (ops/install.sh).
set -euo pipefail

OPS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TARGET=${1:-127.0.0.1:8080}
LISTEN=${2:-127.0.0.1:9090}
ADDRESS_RE='^[A-Za-z0-9.:_-]+:[0-9]+$|^\[[0-9A-Fa-f:]+\]:[0-9]+$'
for address in "$TARGET" "$LISTEN"; do
    if [[ ! $address =~ $ADDRESS_RE ]]; then
        echo "run-prometheus.sh: '$address' is not host:port" >&2
        exit 2
    fi
done

if ! command -v prometheus >/dev/null; then
    echo "run-prometheus.sh: prometheus is not installed (run ops/install.sh or make ops)" >&2
    exit 1
fi

# Keep in sync with ops/install.sh.
PROM_LIB=
for dir in /usr/share/prometheus/console_libraries /etc/prometheus/console_libraries \
    /usr/share/doc/prometheus/examples/console_libraries \
    /usr/local/share/prometheus/console_libraries; do
    if [[ -f $dir/prom.lib ]]; then
        PROM_LIB=$dir/prom.lib
        break
    fi
done
if [[ -z $PROM_LIB ]]; then
    echo "run-prometheus.sh: Prometheus's console library prom.lib not found (run ops/install.sh)" >&2
    exit 1
fi

WORK=$(mktemp -d -t bourse-prometheus.XXXXXX)
STORAGE=${PROMETHEUS_STORAGE:-$WORK/data}
mkdir -p "$WORK/console_libraries" "$STORAGE"
cp -r "$OPS/prometheus/rules" "$WORK/rules"
ln -s "$PROM_LIB" "$OPS"/console_libraries/*.lib "$WORK/console_libraries/"
sed -e "s|\"[^\"]*\"\\]  # bourse-target|\"$TARGET\"]  # bourse-target|" \
    -e "s|\"[^\"]*\"\\]  # prometheus-self|\"$LISTEN\"]  # prometheus-self|" \
    "$OPS/prometheus/prometheus.yml" >"$WORK/prometheus.yml"
grep -q "\"$TARGET\"\\]  # bourse-target" "$WORK/prometheus.yml"
if [[ -n ${BOURSE_METRICS_TOKEN:-} ]]; then
    (umask 077 && printf '%s' "$BOURSE_METRICS_TOKEN" >"$WORK/metrics-token")
    sed -i "s|^    metrics_path: /metrics\$|&\n    authorization:\n      credentials_file: $WORK/metrics-token|" \
        "$WORK/prometheus.yml"
    grep -q "credentials_file: $WORK/metrics-token" "$WORK/prometheus.yml"
fi

child=
cleanup() {
    if [[ -n $child ]]; then
        kill -TERM "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 0' INT TERM

echo "run-prometheus.sh: scraping http://$TARGET/metrics; consoles at http://$LISTEN/consoles/overview.html"
prometheus \
    --config.file="$WORK/prometheus.yml" \
    --storage.tsdb.path="$STORAGE" \
    --web.listen-address="$LISTEN" \
    --web.console.templates="$OPS/consoles" \
    --web.console.libraries="$WORK/console_libraries" \
    --log.level=warn &
child=$!
wait "$child"
