#!/bin/sh
# Entry point of auditproc/redis:7-local, after the official redis image's:
# "redis-server ..." (or "--flag ..." alone) runs Redis in the foreground with
# protected mode off, since a container is reached through its port mapping or
# network, never through loopback. An explicit --protected-mode wins.
set -e

case "$1" in
-*) set -- redis-server "$@" ;;
esac

if [ "$1" = redis-server ]; then
	protected=
	for arg in "$@"; do
		case "$arg" in
		--protected-mode) protected=1 ;;
		esac
	done
	if [ -z "$protected" ]; then
		set -- "$@" --protected-mode no
	fi
fi

exec "$@"
