# syntax=docker/dockerfile:1
#
# Hookbin image: gunicorn (gevent workers) on port 8000, non-root, SQLite in /data by default.
#
#   docker build -t hookbin .
#   docker run -p 8000:8000 -v hookbin-data:/data hookbin
#
# For PostgreSQL set HOOKBIN_DATABASE_URL=postgresql+psycopg://... and run `hookbin migrate`
# before `hookbin serve` (compose.yaml does both). `hookbin serve` migrates SQLite by itself.

# --- front-end packages (htmx, htmx-ext-ws) from the npm lock file -----------------------------
FROM node:20-bookworm-slim AS node
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

# --- the application --------------------------------------------------------------------------
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system hookbin \
    && useradd --system --gid hookbin --home-dir /srv/hookbin --no-create-home \
        --shell /usr/sbin/nologin hookbin

WORKDIR /srv/hookbin

# Dependencies first (pinned in pyproject.toml), so that code changes do not reinstall them.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# The app finds templates/, static/, migrations/, alembic.ini, docs/ and node_modules/ next to
# the app/ package (app/config.py: PROJECT_ROOT is the parent of app/). An editable install
# keeps app/ here, so PROJECT_ROOT is /srv/hookbin.
COPY . .
COPY --from=node /build/node_modules ./node_modules
RUN pip install --no-cache-dir --no-deps -e . \
    && python -m compileall -q app \
    && HOOKBIN_DATABASE_URL=sqlite:////tmp/hookbin-build.sqlite3 hookbin build-assets \
    && rm -f /tmp/hookbin-build.sqlite3 \
    && mkdir -p instance static/gen static/.webassets-cache /data \
    && chown -R hookbin:hookbin instance static/gen static/.webassets-cache /data

# `hookbin serve` re-checks the asset bundle at start (static/gen, static/.webassets-cache) and,
# on SQLite, keeps the database and its notification sockets (hookbin-run/) in /data.
ENV HOOKBIN_DATABASE_URL=sqlite:////data/hookbin.sqlite3
VOLUME /data

USER hookbin
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status == 200 else 1)"]

# gunicorn replaces the `hookbin serve` process (exec), so it is PID 1 and gets the signals.
CMD ["hookbin", "serve", "--host", "0.0.0.0", "--port", "8000"]
