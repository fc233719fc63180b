#!/bin/sh
# Runs once, when the primary's data volume is created (docker-entrypoint-initdb.d): lets standbys
# (the compose profile `pg-replica`) stream from this server with the password of POSTGRES_USER.
set -e
echo "host replication all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
