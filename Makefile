# localvmss: the README's two commands are `make demo` and `make test` (as root on Debian 12).
.PHONY: setup demo demo-down test unit lint image cloud-image bench clean install

PY := .venv/bin/python

setup:
	@bash scripts/setup

demo: setup
	@$(PY) -m localvmss.lab.demo up

demo-down:
	@$(PY) -m localvmss.lab.demo down

test: setup
	@$(PY) -m ruff check localvmss tests bench
	@$(PY) -m mypy localvmss
	@.venv/bin/lint-imports
	@$(PY) -m pytest tests -v --durations=40

install: setup
	@bash scripts/install

unit: setup
	@$(PY) -m pytest tests/unit -q

lint: setup
	@$(PY) -m ruff check localvmss tests bench
	@$(PY) -m mypy localvmss
	@.venv/bin/lint-imports

image:
	@python3 images/build-base --out .cache/images/localvmss-base

cloud-image:
	@python3 images/build-cloud --out .cache/images/localvmss-cloud

bench: setup
	@$(PY) bench/scale_out.py

clean:
	@$(PY) -m localvmss.lab gc || true
	rm -rf .cache
