# localvmss: the README's two commands are `make demo` and `make test` (as root on Debian 12).
.PHONY: setup demo demo-down test faults unit lint image cloud-image bench clean install

PY := .venv/bin/python

setup:
	@bash scripts/setup

demo: setup
	@$(PY) -m localvmss.lab.demo up

demo-down:
	@$(PY) -m localvmss.lab.demo down

# Tests run in two pytest-xdist workers, a file at a time: each worker has its own lab hosts and
# daemon (labs never share a slot); VM tests spend most of their time waiting on guests.
# The fault-injection stage (tests/faults) runs alongside them (scripts/run-tests): it kills its
# daemon, libvirtd, HAProxy and Prometheus and fills the state disk, so it has a lab and daemon to
# itself and touches nothing of the main suite's.
test: setup
	@$(PY) -m ruff check localvmss tests bench
	@$(PY) -m mypy localvmss
	@.venv/bin/lint-imports
	@bash scripts/run-tests

faults: setup
	@$(PY) -m pytest tests/faults -v --durations=10 -p no:cacheprovider

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
