# Sourced by .ci/run: a throwaway PostgreSQL cluster on loopback, in a temporary directory, for the test that
# runs a two-worker sweep against it. Exports SBTS_TEST_POSTGRES_URL; stopped and removed when the shell exits.
# Installs the Debian package when it is missing; without a server the test skips.
pg_bin_dir() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true; }
if [ -z "$(pg_bin_dir)" ] && command -v apt-get >/dev/null && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1 \
    || echo "ci: postgresql could not be installed; its sweep test skips"
fi
PG_BIN="$(pg_bin_dir)"
if [ -n "$PG_BIN" ]; then
  PG_ROOT="$(mktemp -d)"
  PG_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }  # the server refuses root
  [ "$(id -u)" = 0 ] && chown postgres "$PG_ROOT"
  if as_pg "$PG_BIN/initdb" -D "$PG_ROOT/data" -A trust -U sbts >/dev/null \
     && as_pg "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -l "$PG_ROOT/server.log" -w \
          -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_ROOT" start >/dev/null \
     && as_pg "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U sbts sbts_test; then
    export SBTS_TEST_POSTGRES_URL="postgresql://sbts@127.0.0.1:$PG_PORT/sbts_test"
    trap 'as_pg "$PG_BIN/pg_ctl" -D "$PG_ROOT/data" -m fast stop >/dev/null 2>&1; rm -rf "$PG_ROOT"' EXIT
  else
    echo "ci: the PostgreSQL test server did not start (see $PG_ROOT/server.log); its sweep test skips"
  fi
fi
