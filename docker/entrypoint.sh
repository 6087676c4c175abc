#!/bin/sh
# Entrypoint of the Messaging Console image.
#
#   (no argument) or "serve"  migrate the database, make sure a first admin exists, then serve with
#                             gunicorn on CONSOLE_BIND (0.0.0.0:8000 in the image); extra arguments
#                             after "serve" go to gunicorn
#   anything else             run it as given, e.g. `docker compose run --rm console flask --app app
#                             brokers check`
#
# Migrations run here, once per container start, never inside create_app.
set -eu

if [ "$#" -gt 0 ] && [ "$1" != "serve" ]; then
    exec "$@"
fi
if [ "$#" -gt 0 ]; then
    shift
fi

# The database may still be starting, or be away, when the container starts. Then the console serves
# anyway (every page and /healthz answer 503 naming the reason, and it recovers by itself), while the
# migrations are retried in the background every 3 s until they pass; the first admin is made right
# after. Several replicas migrating at once take turns (migrations/env.py).
prepare() {
    flask --app app db upgrade && flask --app app users ensure-admin
}
retry=3
if ! prepare; then
    echo "entrypoint: the database cannot be migrated yet: serving anyway (503 until it can), retrying every $retry s" >&2
    (
        attempt=2
        sleep "$retry"
        until prepare; do
            echo "entrypoint: migrations failed (attempt $attempt), retrying in $retry s" >&2
            attempt=$((attempt + 1))
            sleep "$retry"
        done
        echo "entrypoint: database migrated at attempt $attempt" >&2
    ) &
fi

bind="${CONSOLE_BIND:-0.0.0.0:8000}"
echo "entrypoint: serving on $bind"
CONSOLE_BIND="$bind" exec gunicorn --config gunicorn.conf.py app:app "$@"
