# tcprtt: build the probe's eunomia packages, ship them with the runner, test.
# The Python that scripts/setup.sh set up, when it has run; else the system one.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
ARCH ?= $(shell uname -m)
SHIPPED_ARCHES := x86_64 arm64

.PHONY: all packages ship check test clean

all: packages

# One package per attach variant, for this machine's architecture, in build/ARCH/.
packages:
	$(PYTHON) -m runner.build --arch $(ARCH)

# The packages that ship inside the runner, for every architecture it supports.
ship:
	for arch in $(SHIPPED_ARCHES); do \
		$(PYTHON) -m runner.build --arch $$arch --out runner/packages/$$arch || exit 1; \
	done
	cp probe/config.json runner/packages/config.json

test:
	$(PYTHON) -m pytest

clean:
	rm -rf build
