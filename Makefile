# The three commands of README.md. `.ci/run` calls `make setup` and `make test` exactly.
.PHONY: setup run test test-fast bench lint

setup:
	bash scripts/setup.sh

run:
	.venv/bin/facedata build

test:
	.venv/bin/python -m pytest -q

test-fast:
	.venv/bin/python -m pytest -q -m "not slow"

bench:
	.venv/bin/python -m benchmarks

lint:
	.venv/bin/ruff format --check src tests stages flows benchmarks
	.venv/bin/ruff check src tests stages flows benchmarks
