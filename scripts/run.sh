#!/usr/bin/env bash
# Sets up a fresh machine (PostgreSQL, RabbitMQ, the database) and starts Herald with the
# example workflows in workflows/ and the sandbox sender (no WhatsApp credentials needed).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup-dev.sh
exec cargo run --release --locked -- serve "$@"
