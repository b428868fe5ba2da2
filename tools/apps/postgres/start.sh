#!/bin/sh
# PostgreSQL 17 on a data folder in $PGDATA (an emptyDir in the tests): initialised on first
# start, then the server in the foreground as the postgres user, listening on every address
# with password-less access from the pod network (a test database, nothing else).
#
# dynamic_shared_memory_type=mmap: dynamic shared memory in files under the data folder, which
# ckpt captures with the emptyDir, instead of POSIX segments in /dev/shm (the pod sandbox's
# own tmpfs, which a restored Pod gets new and empty).
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
BIN=/usr/lib/postgresql/17/bin
# setpriv, not su: su stays as the parent of the server, postgres should be PID 1 itself.
AS_POSTGRES="setpriv --reuid=postgres --regid=postgres --init-groups"
mkdir -p "$PGDATA"
chown postgres:postgres "$PGDATA"
chmod 0700 "$PGDATA"
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    $AS_POSTGRES "$BIN/initdb" -D "$PGDATA" --auth=trust --no-sync -U postgres >/dev/null
    echo "host all all 0.0.0.0/0 trust" >>"$PGDATA/pg_hba.conf"
fi
mkdir -p /run/postgresql
chown postgres:postgres /run/postgresql
exec $AS_POSTGRES "$BIN/postgres" -D "$PGDATA" -c listen_addresses='*' \
    -c dynamic_shared_memory_type=mmap -c shared_buffers=32MB
