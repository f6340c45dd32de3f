# Two commands on a fresh clone:  `make demo` (live bridge on the built-in model)  and  `make test`.
# Both create .venv and install pinned requirements first (CPU torch; see README for GPU machines).
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: setup demo render test system-deps bench clean

setup: $(STAMP)

$(STAMP): requirements.txt requirements-dev.txt
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $(STAMP)

demo: setup
	$(PY) run_bridge.py

render: setup
	$(PY) run_bridge.py render --prompt "a yellow star and a green circle" --steps 20 --seed 0 --out runs/star

# Chromium (browser tests) and glslang (shader compile check) come from Debian packages.
system-deps:
	@bash .ci/system-deps.sh

test: setup system-deps
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .pytest_cache
