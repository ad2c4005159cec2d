#!/bin/sh
# Creates the cluster at the first start (superuser $POSTGRES_USER with the
# password of $POSTGRES_PASSWORD_FILE or $POSTGRES_PASSWORD, scram-sha-256 for
# every TCP client), then runs the server in the foreground.
set -eu
if [ "${1:-postgres}" = postgres ]; then
  [ $# -gt 0 ] && shift
  if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile="${POSTGRES_PASSWORD_FILE:-}"
    if [ -z "$pwfile" ]; then
      if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "postgres: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE" >&2
        exit 1
      fi
      pwfile=/tmp/pwfile
      ( umask 077; printf '%s\n' "$POSTGRES_PASSWORD" >"$pwfile" )
    fi
    initdb -D "$PGDATA" -U "${POSTGRES_USER:-auditproc}" --pwfile="$pwfile" \
      --auth-local=trust --auth-host=scram-sha-256 --no-locale -E UTF8 >/dev/null
    # No rm in the image: empty the copy of the password.
    if [ "$pwfile" = /tmp/pwfile ]; then : >"$pwfile"; fi
    echo "host all all 0.0.0.0/0 scram-sha-256" >>"$PGDATA/pg_hba.conf"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "unix_socket_directories = '/tmp'" >>"$PGDATA/postgresql.conf"
  fi
  exec postgres -D "$PGDATA" "$@"
fi
exec "$@"
