"""The Django side of benches/django/run.

    loadbench.py createdb URL NAME      drop and create database NAME on the server of URL
                                        (postgres://… or mysql://…)
    loadbench.py dropdb URL NAME        drop it
    loadbench.py time FIXTURE ROUNDS    flush, then time loaddata (in-process), ROUNDS times;
                                        prints JSON {"times": [...], "median": s}; leaves the
                                        last load in place
    loadbench.py dump-postgres OUT      the configured PostgreSQL database's rows as text, in the
                                        form benches/fixtures.rs writes testdb's
    loadbench.py dump-mysql OUT         the configured MySQL database's rows as text (each value
                                        as QUOTE() writes it), and each table's AUTO_INCREMENT, in
                                        the form benches/fixtures.rs writes testdb's
    loadbench.py dump-sqlite FILE OUT   a SQLite file's rows, each as Python's repr (its types)
    loadbench.py pgenv URL NAME         shell exports of the settings for database NAME on URL
    loadbench.py myenv URL NAME         the same, for a MySQL server
    loadbench.py report WORK            the table of benches/django/run's results in WORK

The database is the one bench/settings.py configures (DJANGO_BENCH_ENGINE and friends).
"""

import json
import os
import sqlite3
import statistics
import sys
import time

TABLES = sorted(
    "chinook_" + model
    for model in [
        "genre",
        "mediatype",
        "artist",
        "album",
        "track",
        "employee",
        "customer",
        "invoice",
        "invoiceline",
        "playlist",
        "playlisttrack",
    ]
)


def server(url, name, create):
    if url.startswith("mysql:"):
        import pymysql

        parts = settings_of(url, 3306, "root")
        conn = pymysql.connect(
            host=parts["HOST"],
            port=int(parts["PORT"]),
            user=parts["USER"],
            password=parts["PASSWORD"],
            autocommit=True,
        )
        with conn.cursor() as cursor:
            cursor.execute(f"DROP DATABASE IF EXISTS `{name}`")
            if create:
                cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        conn.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if create:
            conn.execute(f'CREATE DATABASE "{name}"')


def django_setup():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bench.settings")
    import django

    django.setup()


def time_loaddata(fixture, rounds):
    django_setup()
    from django.core.management import call_command

    times = []
    for _ in range(rounds):
        call_command("flush", interactive=False, verbosity=0)
        started = time.perf_counter()
        call_command("loaddata", fixture, verbosity=0)
        times.append(time.perf_counter() - started)
    print(json.dumps({"times": times, "median": statistics.median(times)}))


def dump_postgres(out):
    django_setup()
    from django.db import connection

    lines = []
    with connection.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
        for table in TABLES:
            cursor.execute(f"SELECT t::text FROM {table} t ORDER BY t.id")
            rows = cursor.fetchall()
            lines.append(f"# {table} {len(rows)}")
            lines.extend(row[0] for row in rows)
        lines.append("# sequences")
        for table in TABLES:
            cursor.execute(f"SELECT pg_get_serial_sequence('{table}', 'id')")
            (sequence,) = cursor.fetchone()
            cursor.execute(
                "SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END "
                f"FROM {sequence}"
            )
            lines.append(f"{table} {cursor.fetchone()[0]}")
    with open(out, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")


def dump_mysql(out):
    django_setup()
    from django.db import connection

    lines = []
    with connection.cursor() as cursor:
        for table in TABLES:
            cursor.execute(
                "SELECT COLUMN_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s ORDER BY ORDINAL_POSITION",
                [table],
            )
            values = ", ".join(f"QUOTE(`{column}`)" for (column,) in cursor.fetchall())
            cursor.execute(f"SELECT CONCAT_WS(',', {values}) FROM {table} ORDER BY id")
            rows = cursor.fetchall()
            lines.append(f"# {table} {len(rows)}")
            lines.extend(row[0] for row in rows)
        lines.append("# sequences")
        for table in TABLES:
            cursor.execute(
                "SELECT AUTO_INCREMENT FROM information_schema.TABLES "
                "WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = %s",
                [table],
            )
            lines.append(f"{table} {cursor.fetchone()[0]}")
    with open(out, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")


def dump_sqlite(path, out):
    conn = sqlite3.connect(path)
    lines = []
    for table in TABLES:
        rows = conn.execute(f"SELECT * FROM {table} ORDER BY id").fetchall()
        lines.append(f"# {table} {len(rows)}")
        lines.extend(repr(row) for row in rows)
    lines.append("# sequences")
    sequences = "SELECT name, seq FROM sqlite_sequence WHERE name LIKE 'chinook%' ORDER BY name"
    for name, seq in conn.execute(sequences):
        lines.append(f"{name} {seq}")
    conn.close()
    with open(out, "w", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")


def settings_of(url, port, user):
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    return {
        "HOST": parts.hostname or "127.0.0.1",
        "PORT": str(parts.port or port),
        "USER": unquote(parts.username or user),
        "PASSWORD": unquote(parts.password or ""),
    }


def exports(prefix, settings, name):
    import shlex

    for key, value in {**settings, "NAME": name}.items():
        print(f"export {prefix}{key}={shlex.quote(value)}")


def pgenv(url, name):
    exports("DJANGO_BENCH_PG_", settings_of(url, 5432, "postgres"), name)


def myenv(url, name):
    exports("DJANGO_BENCH_MY_", settings_of(url, 3306, "root"), name)


def report(work):
    import glob

    def testdb(build, engine):
        pattern = os.path.join(work, f"criterion-{build}", "*", "*", "new", "benchmark.json")
        for path in glob.glob(pattern):
            with open(path) as file:
                if json.load(file)["group_id"] == f"fixtures-django/{engine}":
                    with open(os.path.join(os.path.dirname(path), "estimates.json")) as file:
                        return json.load(file)["median"]["point_estimate"] / 1e9
        return None

    header = (
        "engine",
        "Django loaddata s",
        "testdb debug s",
        "testdb release s",
        "Django/debug",
        "Django/release",
        "debug/release",
    )
    rows = []
    for engine, name in [("postgres", "PostgreSQL"), ("mysql", "MySQL"), ("sqlite", "SQLite")]:
        path = os.path.join(work, f"django.{engine}.json")
        if not os.path.exists(path):
            continue
        with open(path) as file:
            django = json.load(file)["median"]
        debug, release = testdb("debug", name), testdb("release", name)

        def ratio(a, b):
            return f"{a / b:.1f}x" if a and b else "-"

        def seconds(value):
            return f"{value:.3f}" if value else "-"

        rows.append(
            (
                name,
                seconds(django),
                seconds(debug),
                seconds(release),
                ratio(django, debug),
                ratio(django, release),
                ratio(debug, release),
            )
        )
    widths = [max(len(row[at]) for row in [header, *rows]) for at in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


def main(args):
    match args:
        case ["createdb", url, name]:
            server(url, name, create=True)
        case ["dropdb", url, name]:
            server(url, name, create=False)
        case ["time", fixture, rounds]:
            time_loaddata(fixture, int(rounds))
        case ["dump-postgres", out]:
            dump_postgres(out)
        case ["dump-mysql", out]:
            dump_mysql(out)
        case ["dump-sqlite", path, out]:
            dump_sqlite(path, out)
        case ["pgenv", url, name]:
            pgenv(url, name)
        case ["myenv", url, name]:
            myenv(url, name)
        case ["report", work]:
            report(work)
        case _:
            sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
