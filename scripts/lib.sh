# Shared shell helpers of scripts/dev-up.sh and scripts/test.sh: install and start PostgreSQL and Redis from the
# distribution's packages in a private directory, or reuse the ones already running. Sourced, not executed.

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

_apt_updated=
# ensure_pkg COMMAND PACKAGE...: installs PACKAGE(s) when COMMAND is missing, saying so.
ensure_pkg() {
    local cmd=$1; shift
    if command -v "$cmd" >/dev/null 2>&1 || [ -x "$cmd" ]; then return 0; fi
    say "installing $* from the distribution's packages ($cmd is missing)"
    if [ -z "$_apt_updated" ]; then as_root apt-get update -qq >/dev/null; _apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

pg_bindir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

ensure_pg_packages() {
    if [ -z "$(pg_bindir)" ] || [ ! -x "$(pg_bindir)/initdb" ]; then
        ensure_pkg /nonexistent/initdb postgresql postgresql-client
    fi
    ensure_pkg psql postgresql-client
}

# run_pg CMD...: runs a PostgreSQL server binary as the postgres user when we are root (initdb refuses root).
run_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# start_private_pg DIR PORT [extra postgres options]: a cluster of our own in DIR on 127.0.0.1:PORT, trust auth.
start_private_pg() {
    local dir=$1 port=$2; shift 2
    local bin; bin=$(pg_bindir)
    if [ ! -f "$dir/PG_VERSION" ]; then
        say "creating a private PostgreSQL cluster in $dir"
        mkdir -p "$dir"
        [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir" && chmod 700 "$dir"
        run_pg "$bin/initdb" -D "$dir" -U postgres --auth=trust -E UTF8 >/dev/null
    fi
    if ! "$bin/pg_isready" -q -h 127.0.0.1 -p "$port"; then
        say "starting PostgreSQL on 127.0.0.1:$port"
        run_pg "$bin/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
            -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=300 $*" start >/dev/null \
            || die "PostgreSQL did not start; see $dir/server.log"
    fi
}

stop_private_pg() {
    local dir=$1
    [ -f "$dir/postmaster.pid" ] && run_pg "$(pg_bindir)/pg_ctl" -D "$dir" -m fast -w stop >/dev/null 2>&1 || true
}

# pg_superuser_ok URL: true when URL reaches a server as a superuser.
pg_superuser_ok() {
    [ "$(psql "$1" -XtAc 'select rolsuper from pg_roles where rolname = current_user' 2>/dev/null)" = t ]
}

# start_private_redis DIR PORT
start_private_redis() {
    local dir=$1 port=$2
    ensure_pkg redis-server redis-server
    mkdir -p "$dir"
    if ! redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1; then
        say "starting Redis on 127.0.0.1:$port"
        redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
            --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid" >/dev/null
        for _ in $(seq 50); do redis-cli -h 127.0.0.1 -p "$port" ping >/dev/null 2>&1 && return 0; sleep 0.1; done
        die "Redis did not start; see $dir/redis.log"
    fi
}

# default_target_dir: a cargo target directory outside the checkout, reused between runs.
default_target_dir() {
    if [ -w /var/cache ]; then echo /var/cache/octoisp-target; else echo "${XDG_CACHE_HOME:-$HOME/.cache}/octoisp-target"; fi
}

# fresh_run_config RUN ADMIN_URL DB QUIC_PORT HTTP_PORT REDIS_PORT [EXTRA_TOML]: (re)creates database DB in the
# cluster of ADMIN_URL and writes RUN/controlplane.toml (mode 600: it holds the JWT secret) for a control plane on
# loopback using it, the Redis on REDIS_PORT and the extra sections given. Sets DB_ADMIN (admin URL of DB).
fresh_run_config() {
    local run=$1 admin=$2 db=$3 quic=$4 http=$5 redis=$6 extra=${7:-}
    local host_part=${admin#*@}; host_part=${host_part%%/*}
    psql "$admin" -Xqc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
    DB_ADMIN="postgres://postgres@$host_part/$db"
    (
        umask 077
        cat > "$run/controlplane.toml" <<TOML
data_dir = "$run/controlplane"

[database]
url = "postgres://octoisp_app@$host_part/$db"
admin_url = "$DB_ADMIN"

[ingest]
listen = "127.0.0.1:$quic"

[http]
listen = "127.0.0.1:$http"

[api]
redis_url = "redis://127.0.0.1:$redis"

[auth]
jwt_secret = "$(head -c 32 /dev/urandom | base64 | tr -d '\n')"

$extra
TOML
    )
}
