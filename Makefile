# Two entry points: `make demo` and `make test`. Both set up .venv from
# requirements.txt first, so a fresh checkout needs nothing else. `make serve`
# runs the project as production does.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
# The PostgreSQL server the tests use: they create and drop their own databases on
# it, and the second pass puts Django's test database there, named uniquely per run
# (tests/settings.py). Exported, so that the tests' fixtures use the same server.
TEST_DATABASE_URL ?= postgresql://postgres@127.0.0.1:5432/postgres
export TEST_DATABASE_URL
DEMO_ADDR ?= 127.0.0.1:8000
# Where `make serve` listens; 0.0.0.0:8000 in a container.
SERVE_ADDR ?= 127.0.0.1:8000
# Test workers (pytest-xdist). Tests that share a module's databases, and the
# concurrency rounds, stay together on one worker (--dist loadgroup).
TEST_WORKERS ?= 2
PYTEST := $(BIN)/pytest -n $(TEST_WORKERS) --dist loadgroup
# More pytest options for both passes, e.g. PYTEST_ARGS="--concurrency-rounds 1".
PYTEST_ARGS ?=

.PHONY: install demo serve test verify lint

install: $(INSTALLED)

$(INSTALLED): requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	touch $@

# The demo command first checks that the server can listen on DEMO_ADDR, so that
# it never prints a new password for a server that then fails to start.
demo: $(INSTALLED)
	DEBUG=true $(BIN)/python manage.py demo --addr $(DEMO_ADDR)
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
	$(PYTEST) $(PYTEST_ARGS)
	@if reason=$$($(BIN)/python -m tests.support.server 2>&1); then \
		DATABASE_URL="$$TEST_DATABASE_URL" $(PYTEST) -m django_db $(PYTEST_ARGS); \
	elif [ "$$CI" = "true" ]; then \
		echo "CI=true but $$reason" >&2; exit 1; \
	else \
		echo "!!! SKIPPED: the Django-database tests on PostgreSQL: $$reason" >&2; \
	fi

# The clean-database check of the migration history, on PostgreSQL.
verify: $(INSTALLED)
	SECRET_KEY=verify DATABASE_URL="$$TEST_DATABASE_URL" $(BIN)/python manage.py alembic_verify

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
