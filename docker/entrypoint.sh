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

# The database may still be starting when the container starts without an orchestrator that waits
# for it: retry the migrations a few times before giving up.
attempt=1
until flask --app app db upgrade; do
    if [ "$attempt" -ge 10 ]; then
        echo "entrypoint: database migrations failed $attempt times; giving up" >&2
        exit 1
    fi
    echo "entrypoint: database migrations failed (attempt $attempt), retrying in 3 s" >&2
    attempt=$((attempt + 1))
    sleep 3
done

flask --app app users ensure-admin

bind="${CONSOLE_BIND:-0.0.0.0:8000}"
echo "entrypoint: serving on $bind"
CONSOLE_BIND="$bind" exec gunicorn --config gunicorn.conf.py app:app "$@"
