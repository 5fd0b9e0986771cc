"""Settings of the Django side of the fixture bench (benches/django/run).

DJANGO_BENCH_ENGINE picks the database: `postgres` (DJANGO_BENCH_PG_* name the server and the
database), `mysql` (DJANGO_BENCH_MY_*; through PyMySQL, which needs no C client library) or
`sqlite` (DJANGO_BENCH_SQLITE, the file).
"""

import os

SECRET_KEY = "bench-only"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
INSTALLED_APPS = ["chinook"]
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

ENGINE = os.environ.get("DJANGO_BENCH_ENGINE", "postgres")

if ENGINE == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ.get("DJANGO_BENCH_PG_NAME", "django_bench"),
            "USER": os.environ.get("DJANGO_BENCH_PG_USER", "postgres"),
            "PASSWORD": os.environ.get("DJANGO_BENCH_PG_PASSWORD", ""),
            "HOST": os.environ.get("DJANGO_BENCH_PG_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DJANGO_BENCH_PG_PORT", "5432"),
        }
    }
elif ENGINE == "mysql":
    import pymysql

    pymysql.install_as_MySQLdb()
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ.get("DJANGO_BENCH_MY_NAME", "django_bench"),
            "USER": os.environ.get("DJANGO_BENCH_MY_USER", "root"),
            "PASSWORD": os.environ.get("DJANGO_BENCH_MY_PASSWORD", ""),
            "HOST": os.environ.get("DJANGO_BENCH_MY_HOST", "127.0.0.1"),
            "PORT": os.environ.get("DJANGO_BENCH_MY_PORT", "3306"),
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("DJANGO_BENCH_SQLITE", "django_bench.sqlite3"),
        }
    }
