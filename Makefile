# The two entry points (see README): `make demo` and `make test`. Both build the environment
# first (tools/setup_env.sh: idempotent, seconds when already built).
PY := .venv/bin/python

.PHONY: env demo test
env:
	bash tools/setup_env.sh

demo: env
	$(PY) tools/demo.py

test: env
	$(PY) -m pytest tests
