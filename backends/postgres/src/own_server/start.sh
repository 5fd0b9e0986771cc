# Starts testdb's own PostgreSQL server in the background, prints its pid, and leaves a watcher
# that stops it once no process has held its place on it (the shared advisory lock PRESENCE) for
# IDLE seconds. Run as the server's user, by `sh -c`, with PGBIN, PGDATA, SOCKDIR, LOG, IDLE
# (0: never stop) and TICK (seconds between looks) in the environment.
#
# The stop is decided under the lock itself: the watcher takes PRESENCE exclusively, so a process
# that takes its place meanwhile waits, and is then refused with the server, which it starts again.
set -u
"$PGBIN/postgres" -D "$PGDATA" -k "$SOCKDIR" -h '' \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200 -c lc_messages=C -c unix_socket_permissions=0700 \
    </dev/null >>"$LOG" 2>&1 &
pm=$!
export pm
if [ "$IDLE" -gt 0 ]; then
    (
        last=$(date +%s)
        misses=0
        while sleep "$TICK"; do
            # Stopped, or replaced by another server: nothing left to watch.
            [ "$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)" = "$pm" ] || exit 0
            now=$(date +%s)
            stop=off
            [ $((now - last)) -ge "$IDLE" ] && stop=on
            answer=$("$PGBIN/psql" -X -q -At -h "$SOCKDIR" -U postgres -d postgres \
                -v stop="$stop" 2>/dev/null <<'SQL'
SELECT pg_try_advisory_lock(PRESENCE) AS free \gset
\if :free
\if :stop
\! kill -INT "$pm"
\endif
\echo free
\else
\echo busy
\endif
SQL
            )
            case $answer in
                free) misses=0 ;;
                busy) last=$now; misses=0 ;;
                # Full, or gone without a trace (killed): counted as busy, for a while.
                *)
                    last=$now
                    misses=$((misses + 1))
                    [ "$misses" -ge 120 ] && exit 0
                    ;;
            esac
        done
    ) </dev/null >/dev/null 2>&1 &
fi
echo "$pm"
