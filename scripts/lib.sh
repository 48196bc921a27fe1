# Shared by scripts/run and scripts/test: install what is missing, make sure RabbitMQ and
# PostgreSQL answer at the configured URLs. Sourced, not run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEFAULT_AMQP_URL="amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DATABASE_URL="postgresql://switchboard:switchboard@127.0.0.1:5432/switchboard"
AMQP_CONFIGURED=${CHAT_AMQP_URL:+yes}
DB_CONFIGURED=${CHAT_DATABASE_URL:+yes}
export CHAT_AMQP_URL=${CHAT_AMQP_URL:-$DEFAULT_AMQP_URL}
export CHAT_DATABASE_URL=${CHAT_DATABASE_URL:-$DEFAULT_DATABASE_URL}

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
    say "installing Debian packages: $*"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

install_python_deps() {
    if ! command -v uv >/dev/null 2>&1; then
        say "installing uv"
        python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
        export PATH="$HOME/.local/bin:$PATH"
    fi
    say "installing the workspace (uv sync)"
    (cd "$ROOT" && uv sync --frozen --quiet)
}

# host and port of a URL, e.g. "127.0.0.1 5672"
host_port() {
    "$ROOT/.venv/bin/python" - "$1" "$2" <<'PY'
import sys
from urllib.parse import urlsplit
u = urlsplit(sys.argv[1])
print(u.hostname or "127.0.0.1", u.port or int(sys.argv[2]))
PY
}

port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

wait_port() {
    for _ in $(seq 1 60); do port_open "$1" "$2" && return 0; sleep 1; done
    return 1
}

ensure_rabbitmq() {
    read -r host port < <(host_port "$CHAT_AMQP_URL" 5672)
    port_open "$host" "$port" && return 0
    if [ -n "$AMQP_CONFIGURED" ]; then
        echo "RabbitMQ is not reachable at CHAT_AMQP_URL ($host:$port). Start it, or unset CHAT_AMQP_URL" \
             "to let this script install and start a local one." >&2
        exit 1
    fi
    command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
    say "starting RabbitMQ"
    as_root rabbitmq-server -detached
    wait_port "$host" "$port" || { echo "RabbitMQ did not start on $host:$port" >&2; exit 1; }
}

ensure_postgres() {
    read -r host port < <(host_port "$CHAT_DATABASE_URL" 5432)
    if ! port_open "$host" "$port"; then
        if [ -n "$DB_CONFIGURED" ]; then
            echo "PostgreSQL is not reachable at CHAT_DATABASE_URL ($host:$port). Start it, or unset" \
                 "CHAT_DATABASE_URL to let this script install and start a local one." >&2
            exit 1
        fi
        command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
        say "starting PostgreSQL"
        as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start
        wait_port "$host" "$port" || { echo "PostgreSQL did not start on $host:$port" >&2; exit 1; }
    fi
    # The default URL names a `switchboard` role; create it (allowed to create databases, which
    # the services and the tests do) when this machine's PostgreSQL does not know it yet.
    if [ -z "$DB_CONFIGURED" ] && ! psql "${CHAT_DATABASE_URL%/*}/postgres" -qtAc 'select 1' >/dev/null 2>&1; then
        say "creating the PostgreSQL role 'switchboard'"
        as_root runuser -u postgres -- psql -qc \
            "CREATE ROLE switchboard LOGIN CREATEDB PASSWORD 'switchboard'" >/dev/null
    fi
}

migrate_all() {
    for service in messages delivery presence; do
        "$ROOT/.venv/bin/switchboard-$service" migrate
    done
}
