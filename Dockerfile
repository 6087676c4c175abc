# Messaging Console image: gunicorn serving `app:app` on port 8000.
#
#   docker build -t messaging-console .
#   docker compose up -d            (see docker-compose.yml: console + PostgreSQL + the five brokers)
#
# The entrypoint (docker/entrypoint.sh) runs `flask db upgrade` and `flask users ensure-admin` before
# it starts gunicorn; migrations never run inside create_app.

# --- build stage: wheels that need a compiler (twofish, a dependency of pyjks, ships no wheel) ------
FROM python:3.11-slim AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

# Runtime dependencies only (requirements-dev.txt stays out of the image).
COPY requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt

# --- runtime stage ----------------------------------------------------------------------------------
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    CONSOLE_INSTANCE_PATH=/app/instance \
    CONSOLE_BIND=0.0.0.0:8000

RUN groupadd --system --gid 10001 console \
 && useradd --system --uid 10001 --gid console --create-home --home-dir /home/console \
        --shell /usr/sbin/nologin console

COPY --from=build /opt/venv /opt/venv

WORKDIR /app
COPY app.py gunicorn.conf.py ./
COPY console/ console/
COPY migrations/ migrations/
COPY templates/ templates/
COPY static/ static/
COPY docker/entrypoint.sh /usr/local/bin/console-entrypoint

RUN chmod 0755 /usr/local/bin/console-entrypoint \
 && mkdir -p /app/instance \
 && chown console:console /app/instance

USER console

# Generated keys and the default SQLite database live here when no CONSOLE_* variable replaces them.
VOLUME ["/app/instance"]
EXPOSE 8000

# Liveness through /healthz (no curl in the slim image): the port is the one of CONSOLE_BIND.
HEALTHCHECK --interval=15s --timeout=5s --start-period=40s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('CONSOLE_BIND', '0.0.0.0:8000').rsplit(':', 1)[-1]; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:%s/healthz' % port, timeout=4).status == 200 else 1)"]

ENTRYPOINT ["console-entrypoint"]
CMD ["serve"]
