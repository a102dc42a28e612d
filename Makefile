# Likeness: set up, run the demo, run the tests.
#   make demo   create .venv from the lock file and run the main job on the bundled photos
#   make test   the same setup, plus Debian's chromium for the browser tests, then the test suite
PYTHON ?= python3.11
VENV   ?= .venv
PIP     = $(VENV)/bin/pip
PY      = $(VENV)/bin/python
export HF_HUB_OFFLINE = 1

.PHONY: install demo test lint format bench lock browser clean

$(VENV)/.installed: requirements.lock pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --no-deps -r requirements.lock
	$(PIP) install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/likeness demo demo-workspace --fresh

# The browser tests drive Debian's chromium; install it when missing (needs root or sudo).
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: install browser lint
	$(PY) -m pytest

lint:
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench

format:
	$(VENV)/bin/ruff format src tests bench
	$(VENV)/bin/ruff check --fix src tests bench

bench: install
	for script in bench/*.py; do $(PY) $$script || exit 1; done

# Resolve requirements.in in a scratch venv, add requirements-nodeps.in without their declared
# dependencies (the file says why), and write the exact set to requirements.lock.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in
	.lock-venv/bin/pip install --quiet --no-deps -r requirements-nodeps.in
	.lock-venv/bin/pip freeze --exclude-editable > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf $(VENV) demo-workspace test-artifacts
