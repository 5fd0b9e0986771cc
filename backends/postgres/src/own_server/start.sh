# Starts testdb's own PostgreSQL server in the background, prints its pid, and leaves a watcher
# that stops it once no process has used it for IDLE seconds: none has held its place on it (the
# shared advisory lock PRESENCE), and no session has begun or ended in the database `postgres`,
# where every process takes its place (PostgreSQL 14's count of sessions: a process that came and
# went within a look is seen by it). Run as the server's user,
# by `sh -c`, with PGBIN, PGDATA, SOCKDIR, LOG, IDLE (0: never stop) and TICK (seconds between
# looks) in an environment of only these.
#
# The stop is decided under the lock itself: the watcher takes PRESENCE exclusively, so a process
# that takes its place meanwhile waits, and is then refused with the server, which it starts again.
set -u
umask 077
"$PGBIN/postgres" -D "$PGDATA" -k "$SOCKDIR" -h '' -p 5432 \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200 -c lc_messages=C -c unix_socket_permissions=0700 \
    </dev/null >>"$LOG" 2>&1 &
pm=$!
export pm
if [ "$IDLE" -gt 0 ]; then
    (
        last=$(date +%s)
        misses=0
        seen=
        while sleep "$TICK"; do
            # Stopped, or replaced by another server: nothing left to watch.
            [ "$(head -n 1 "$PGDATA/postmaster.pid" 2>/dev/null)" = "$pm" ] || exit 0
            now=$(date +%s)
            stop=off
            [ $((now - last)) -ge "$IDLE" ] && stop=on
            answer=$("$PGBIN/psql" -X -q -At -h "$SOCKDIR" -p 5432 -U postgres -d postgres \
                -v stop="$stop" -v seen="${seen:-none}" 2>/dev/null <<'SQL'
SELECT coalesce((to_jsonb(d) ->> 'sessions')::bigint, 0) AS sessions
FROM pg_stat_database AS d WHERE datname = 'postgres' \gset
SELECT (:'sessions' IN (:'seen', '0')) AND pg_try_advisory_lock(PRESENCE) AS free \gset
\if :free
\if :stop
\! kill -INT "$pm"
\endif
\echo free :sessions
\else
\echo busy :sessions
\endif
SQL
            )
            # The next look's count includes this look's own session.
            case $answer in
                free*) misses=0; seen=$((${answer#free } + 1)) ;;
                busy*) last=$now; misses=0; seen=$((${answer#busy } + 1)) ;;
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
