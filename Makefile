# The two entry points (see README): `make demo` and `make test`. Both build the environment
# first (tools/setup_env.sh: idempotent, seconds when already built).
PY := .venv/bin/python

.PHONY: env demo test
env:
	bash tools/setup_env.sh

demo: env
	$(PY) tools/demo.py

# every core runs tests (pytest-xdist), a file's tests together and in order, one thread each
test: env
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -n auto --dist loadfile
