#!/usr/bin/env bash
# Prepare a Debian development machine for Herald:
#   - PostgreSQL running on 127.0.0.1:5432, user `postgres` allowed over TCP without password
#   - RabbitMQ running on 127.0.0.1:5672 (guest/guest)
#   - the database named in HERALD_DATABASE_URL (default `herald`) exists
#   - schemathesis (pinned) in the repository's .venv/, for the API fuzz test
#
# Idempotent: safe to run any number of times; on a machine where everything is
# already set up it only checks and exits. Runs as root, or as a user with sudo.
# Nothing is downloaded except Debian packages through apt-get and, when .venv/
# lacks it, schemathesis from PyPI through pip.
#
# Usage: scripts/setup-dev.sh
#   HERALD_DATABASE_URL  only its database name (path) is used; the server is
#                        always the local one on 127.0.0.1:5432.
set -euo pipefail

PG_HOST=127.0.0.1
PG_PORT=5432
AMQP_HOST=127.0.0.1
AMQP_PORT=5672
DEFAULT_DATABASE_URL='postgres://postgres@127.0.0.1:5432/herald'
HBA_MARKER='# herald setup-dev: trust local TCP for development'
# The version tests/e2e/api_fuzz.rs runs, as .venv/bin/schemathesis.
SCHEMATHESIS_VERSION=4.32.5

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

# Run a command with root privileges: directly if root, else via sudo.
as_root() {
    if [[ ${EUID} -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root privileges for '$*' (run as root or install sudo)"
    fi
}

apt_updated=0
apt_install() {
    if [[ ${apt_updated} -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
        apt_updated=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

# True if a TCP connection to host:port succeeds within 2 seconds.
port_open() {
    # shellcheck disable=SC2016 # $0/$1 are expanded by the inner bash
    timeout 2 bash -c 'exec 3<>"/dev/tcp/$0/$1"' "$1" "$2" 2>/dev/null
}

pg_ready() {
    command -v pg_isready >/dev/null 2>&1 &&
        pg_isready -q -h "${PG_HOST}" -p "${PG_PORT}"
}

# psql as `postgres` over TCP, no ~/.psqlrc, unaligned tuples-only output.
pg_sql() {
    psql -X -q -A -t -v ON_ERROR_STOP=1 -h "${PG_HOST}" -p "${PG_PORT}" -U postgres -d postgres "$@"
}

# Newest PostgreSQL major version with a Debian cluster config, or empty.
pg_version() {
    [[ -d /etc/postgresql ]] || return 0
    find /etc/postgresql -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1
}

# ---------------------------------------------------------------- PostgreSQL
ensure_postgres() {
    if pg_ready; then
        log "PostgreSQL is accepting connections on ${PG_HOST}:${PG_PORT}"
    else
        local ver
        ver="$(pg_version)"
        if [[ -z "${ver}" ]] || ! command -v pg_ctlcluster >/dev/null 2>&1; then
            apt_install postgresql
            ver="$(pg_version)"
        fi
        [[ -n "${ver}" ]] || die "PostgreSQL is installed but /etc/postgresql has no cluster version"
        if [[ ! -d "/etc/postgresql/${ver}/main" ]]; then
            log "creating PostgreSQL ${ver} cluster 'main'"
            as_root pg_createcluster "${ver}" main
        fi
        log "starting PostgreSQL ${ver}/main"
        if ! as_root pg_ctlcluster --skip-systemctl-redirect "${ver}" main start; then
            log "pg_ctlcluster failed; trying 'service postgresql start'"
            as_root service postgresql start
        fi
        local deadline=$((SECONDS + 30))
        until pg_ready; do
            ((SECONDS < deadline)) || die "PostgreSQL did not accept connections on ${PG_HOST}:${PG_PORT} within 30 s"
            sleep 1
        done
        log "PostgreSQL is up"
    fi

    if ! command -v psql >/dev/null 2>&1; then
        apt_install postgresql-client
    fi

    if pg_sql -c 'select 1' >/dev/null 2>&1; then
        log "TCP login as 'postgres' without password works"
        return 0
    fi

    # Typically a fresh Debian install: pg_hba.conf asks for a password on
    # 127.0.0.1/::1 and `postgres` has none. Prepend trust rules (first match wins).
    local ver hba tmp
    ver="$(pg_version)"
    hba="/etc/postgresql/${ver}/main/pg_hba.conf"
    if [[ -z "${ver}" ]] || ! as_root test -f "${hba}"; then
        die "cannot log in as 'postgres' on ${PG_HOST}:${PG_PORT} and no Debian pg_hba.conf found to fix it"
    fi
    if as_root grep -qF "${HBA_MARKER}" "${hba}"; then
        die "trust rules already present in ${hba} but login as 'postgres' on ${PG_HOST}:${PG_PORT} still fails"
    fi
    log "adding trust rules for 127.0.0.1/32 and ::1/128 to ${hba}"
    tmp="$(mktemp)"
    {
        printf '%s\n' "${HBA_MARKER}"
        printf 'host    all    all    127.0.0.1/32    trust\n'
        printf 'host    all    all    ::1/128         trust\n'
        printf '\n'
        as_root cat "${hba}"
    } >"${tmp}"
    as_root cp -p "${hba}" "${hba}.herald-setup.bak"
    as_root cp "${tmp}" "${hba}" # cp onto the existing file keeps its owner and mode
    rm -f "${tmp}"
    log "reloading PostgreSQL ${ver}/main"
    if ! as_root pg_ctlcluster --skip-systemctl-redirect "${ver}" main reload; then
        as_root service postgresql reload
    fi
    local deadline=$((SECONDS + 10))
    until pg_sql -c 'select 1' >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "login as 'postgres' on ${PG_HOST}:${PG_PORT} still fails after reload"
        sleep 1
    done
    log "TCP login as 'postgres' without password works"
}

# ------------------------------------------------------------------ RabbitMQ
ensure_rabbitmq() {
    if port_open "${AMQP_HOST}" "${AMQP_PORT}"; then
        log "RabbitMQ is listening on ${AMQP_HOST}:${AMQP_PORT}"
        return 0
    fi
    if [[ ! -x /usr/sbin/rabbitmq-server ]] && ! command -v rabbitmq-server >/dev/null 2>&1; then
        apt_install rabbitmq-server
        # The package may have started the broker already (where init scripts run).
    fi
    if ! port_open "${AMQP_HOST}" "${AMQP_PORT}"; then
        log "starting RabbitMQ (rabbitmq-server -detached)"
        as_root rabbitmq-server -detached
    fi
    log "waiting for RabbitMQ on ${AMQP_HOST}:${AMQP_PORT} (up to 60 s)"
    local deadline=$((SECONDS + 60))
    until port_open "${AMQP_HOST}" "${AMQP_PORT}"; do
        ((SECONDS < deadline)) || die "RabbitMQ did not listen on ${AMQP_HOST}:${AMQP_PORT} within 60 s"
        sleep 2
    done
    log "RabbitMQ is up"
    # A fresh broker has guest/guest (loopback only); just check, don't change users.
    if ! as_root timeout 20 rabbitmqctl -q authenticate_user guest guest >/dev/null 2>&1; then
        log "warning: 'rabbitmqctl authenticate_user guest guest' failed; Herald's default AMQP URL uses guest/guest"
    fi
}

# ------------------------------------------------------------------ database
database_name() {
    local url="${HERALD_DATABASE_URL:-${DEFAULT_DATABASE_URL}}"
    local rest="${url#*://}" name=""
    if [[ "${rest}" == */* ]]; then
        name="${rest#*/}"
    fi
    name="${name%%\?*}"
    name="${name%%#*}"
    printf '%s\n' "${name:-herald}"
}

ensure_database() {
    local db="$1" exists
    exists="$(pg_sql -c "SELECT 1 FROM pg_database WHERE datname = '${db}'")"
    if [[ -n "${exists}" ]]; then
        log "database '${db}' exists"
    else
        log "creating database '${db}'"
        pg_sql -c "CREATE DATABASE \"${db}\""
    fi
}

# --------------------------------------------------------------- schemathesis
# A virtualenv inside the repository (.venv/, git-ignored) keeps the tool pinned and
# off the system Python; it is created and filled only when it lacks this version.
ensure_schemathesis() {
    local root venv
    root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    venv="${root}/.venv"
    if [[ -x "${venv}/bin/schemathesis" ]] &&
        [[ "$("${venv}/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" == "${SCHEMATHESIS_VERSION}" ]]; then
        log "schemathesis ${SCHEMATHESIS_VERSION} is in ${venv}"
        return 0
    fi
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    if [[ ! -x "${venv}/bin/pip" ]]; then
        log "creating the virtualenv ${venv}"
        python3 -m venv "${venv}" || {
            apt_install python3-venv
            python3 -m venv --clear "${venv}"
        }
    fi
    log "installing schemathesis ${SCHEMATHESIS_VERSION} into ${venv}"
    "${venv}/bin/pip" install --quiet --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
    "${venv}/bin/schemathesis" --version >/dev/null || die "schemathesis does not start from ${venv}"
}

main() {
    local db
    db="$(database_name)"
    # Checked up front (the name is interpolated into SQL below).
    [[ "${db}" =~ ^[A-Za-z_][A-Za-z0-9_-]*$ ]] ||
        die "unsupported database name '${db}' in HERALD_DATABASE_URL (use letters, digits, '_' or '-')"
    ensure_postgres
    ensure_rabbitmq
    ensure_database "${db}"
    ensure_schemathesis
    log "done: postgres://postgres@${PG_HOST}:${PG_PORT}/${db} and amqp://guest:guest@${AMQP_HOST}:${AMQP_PORT}/%2f are ready"
}

main "$@"
