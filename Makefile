# Two entry points: `make demo` and `make test`. Both set up .venv from
# requirements.txt first, so a fresh checkout needs nothing else. `make serve`
# runs the project as production does.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The PostgreSQL server the tests use; they create and drop their own databases on it.
PG_SERVER ?= postgresql://postgres@127.0.0.1:5432/postgres
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/materials
DEMO_ADDR ?= 127.0.0.1:8000
# Where `make serve` listens; 0.0.0.0:8000 in a container.
SERVE_ADDR ?= 127.0.0.1:8000

.PHONY: install demo serve test verify lint

install: $(INSTALLED)

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

demo: $(INSTALLED)
	DEBUG=true $(BIN)/python manage.py demo
	DEBUG=true $(BIN)/python manage.py runserver $(DEMO_ADDR)

# gunicorn on the configured database (DATABASE_URL, SECRET_KEY... from the
# environment or .env), with the static files collected for whitenoise.
serve: $(INSTALLED)
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/gunicorn config.wsgi --bind $(SERVE_ADDR)

# The whole suite on SQLite (with the PostgreSQL tests on their own scratch
# databases), then the tests that use Django's own test database once more,
# on PostgreSQL.
test: $(INSTALLED)
	$(BIN)/pytest
	@if $(BIN)/python -c "import psycopg; psycopg.connect('$(PG_SERVER)', connect_timeout=5).close()" 2>/dev/null; then \
		DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest -m django_db; \
	elif [ "$$CI" = "true" ]; then \
		echo "CI=true but PostgreSQL is not reachable at $(PG_SERVER)" >&2; exit 1; \
	else \
		echo "!!! SKIPPED: the Django-database tests on PostgreSQL: no server at $(PG_SERVER)" >&2; \
	fi

# The clean-database check of the migration history, on PostgreSQL.
verify: $(INSTALLED)
	SECRET_KEY=verify DATABASE_URL=$(PG_SERVER) $(BIN)/python manage.py alembic_verify

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
