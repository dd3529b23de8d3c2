# The two commands a new user needs; each installs what it needs into .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test bench bench-raft install clean

$(BIN)/activate:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install: $(BIN)/activate   ## the package itself, built (Cython) in place
	$(BIN)/python -m pip install -q -e .

demo: install              ## start a 3-process mesh and show its traffic live
	$(BIN)/python -m mesh.demo

test:                      ## what CI runs: fresh venv, build, tests on both hot paths
	bash .ci/run

bench: install             ## latency/throughput table with ratios; make bench ARGS="--plot"
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m bench $(ARGS)

bench-raft: install        ## Raft: mesh vs PySyncObj writes/s, latency, failover; ARGS="--quick"
	$(BIN)/python -m pip install -q -e ".[bench]"
	$(BIN)/python -m bench.raft --plot $(ARGS)

clean:
	rm -rf $(VENV) build *.egg-info mesh/_core/*.so mesh/_core/*.c
