#!/usr/bin/env bash
# Sets up a fresh machine (PostgreSQL, RabbitMQ, the database) and starts Herald with the
# example workflows in workflows/ and the sandbox sender (no WhatsApp credentials needed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-dev.sh
# Sandbox mode only here, where it is asked for: sends are recorded, credentials are defaults.
export HERALD_SANDBOX="${HERALD_SANDBOX:-true}"
exec cargo run --release --locked -- serve "$@"
