#!/usr/bin/env bash
# Runs every test on a fresh Debian machine: installs what the tests need (Debian packages
# via apt-get when missing), then the quality gates and the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Debian packages the tests use: curl and procps (kill, /proc readers) for process tests,
# redis-server for rate limits shared across nodes, pebble (with pebble-challtestsrv) as the
# ACME CA automatic certificates are ordered from, openssl as an OCSP responder and client,
# sqlite3 to put into a control plane's store what its API no longer takes, python3 and pip
# for schemathesis, chromium and chromium-driver (chromedriver) for the browser tests of the
# console and portal pages (docs/testing.md), postgresql for the control plane's second
# backend (the end-to-end suite runs again on it), haproxy as the load balancer in front of
# several control-plane nodes.
need=()
command -v curl >/dev/null || need+=(curl)
command -v kill >/dev/null || need+=(procps)
command -v redis-server >/dev/null || need+=(redis-server)
command -v pebble >/dev/null || need+=(pebble)
command -v openssl >/dev/null || need+=(openssl)
command -v sqlite3 >/dev/null || need+=(sqlite3)
command -v python3 >/dev/null || need+=(python3 python3-pip)
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
ls -d /usr/lib/postgresql/*/bin >/dev/null 2>&1 || need+=(postgresql)
command -v haproxy >/dev/null || need+=(haproxy)
command -v psql >/dev/null || need+=(postgresql-client)
if [ "${#need[@]}" -gt 0 ]; then
    SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -q
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
fi

# schemathesis (PyPI) checks the admin API against its OpenAPI document
# (crates/portico/tests/api_shape.rs); pip puts `st` in ~/.local/bin when it installs for
# the user only.
export PATH="$HOME/.local/bin:$PATH"
if ! command -v st >/dev/null; then
    python3 -m pip install --quiet 'schemathesis==4.32.5' ||
        python3 -m pip install --quiet --user --break-system-packages 'schemathesis==4.32.5'
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The fuzz targets (fuzz/, outside the workspace: libFuzzer stays out of stable builds) must
# build; their entry points run the seed corpora and property tests in the suite below
# (portico_proxy::fuzz). Fuzzing itself is in the README ("Fuzzing").
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
CARGO_TARGET_DIR=target/fuzz cargo build --manifest-path fuzz/Cargo.toml
# The end-to-end tests that start a control plane, again with its state on PostgreSQL: a
# throwaway cluster on loopback (scripts/postgres.sh), a database per control plane.
on_postgres='binary(acme) | binary(api_shape) | binary(apply) | binary(apps) | binary(browser) | binary(console) | binary(control_plane) | binary(deltas) | binary(appmesh) | binary(mends) | binary(mesh) | binary(people) | binary(ports) | binary(security) | binary(traces)'
pg_dir=$(mktemp -d /tmp/portico-pg.XXXXXX)
pg_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc
    scripts/postgres.sh start "$pg_dir" "$pg_port"
    trap 'scripts/postgres.sh stop "$pg_dir"' EXIT
    PORTICO_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port" \
        cargo nextest run -p portico --no-fail-fast -E "$on_postgres"
else
    cargo test --workspace --no-fail-fast
    scripts/postgres.sh start "$pg_dir" "$pg_port"
    trap 'scripts/postgres.sh stop "$pg_dir"' EXIT
    PORTICO_TEST_POSTGRES="postgres://postgres@127.0.0.1:$pg_port" \
        cargo test -p portico --no-fail-fast --test acme --test api_shape --test apply --test apps \
        --test browser --test console --test control_plane --test appmesh --test mends --test mesh --test people --test ports --test security
fi
# One crypto provider only (see DEPENDENCIES.md): ring must never enter the graph.
# (The lock file may list ring as an optional dependency of a dependency; what counts is the
# compiled graph, which `cargo tree -i` prints.)
if cargo tree -i ring --workspace 2>/dev/null | grep -q '^ring'; then
    echo "error: the ring crate is in the dependency graph; keep aws-lc-rs as the only provider" >&2
    exit 1
fi
