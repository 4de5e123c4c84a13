#!/usr/bin/env bash
# Runs Herald's whole test suite against the local PostgreSQL and RabbitMQ (started if needed).
# Tests create their own databases and RabbitMQ names and remove them afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-dev.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo run --quiet --locked -- workflows validate workflows/
cargo test --workspace --locked --all-targets
