# tcprtt: build the probe's eunomia packages, ship them with the runner, test.
# The Python that scripts/setup.sh set up, when it has run; else the system one.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)
ARCH ?= $(shell uname -m)
SHIPPED_ARCHES := x86_64 arm64

.PHONY: all packages ship check test clean wasm

all: packages wasm

# One package per attach variant, for this machine's architecture, in build/ARCH/.
packages:
	$(PYTHON) -m runner.build --arch $(ARCH)

# The packages that ship inside the runner, for every architecture it supports.
ship:
	for arch in $(SHIPPED_ARCHES); do \
		$(PYTHON) -m runner.build --arch $$arch --out runner/packages/$$arch || exit 1; \
	done
	cp probe/config.json runner/packages/config.json
	$(MAKE) wasm
	cp $(WASM_BUILD)/tcprtt.wasm runner/packages/tcprtt.wasm

# tcprtt as a WASI module for a wasm-bpf host, embedding the shipped packages'
# objects: Debian's clang-14, wasi-libc, lld-14 and libclang-rt-14-dev-wasm32.
WASM_CC ?= clang-14
WASI_INCLUDE ?= /usr/include/wasm32-wasi
WASI_LIB ?= /usr/lib/wasm32-wasi
WASM_BUILD := build/wasm
WASM_SOURCES := $(sort $(wildcard wasm/*.c))
WASM_INPUTS := $(WASM_SOURCES) $(wildcard wasm/*.h) wasm/gen_objects.py probe/config.json \
	$(sort $(wildcard runner/packages/*/tcprtt.*.json))
WASM_CFLAGS := --target=wasm32-wasi --sysroot=$(WASM_BUILD)/sysroot -O2 -std=c11 \
	-D_POSIX_C_SOURCE=200809L -Wall -Wextra -Werror -I$(WASM_BUILD)/gen -Iwasm
WASM_LDFLAGS := -Wl,--allow-undefined,--export-table

wasm: $(WASM_BUILD)/tcprtt.wasm

$(WASM_BUILD)/tcprtt.wasm: $(WASM_INPUTS)
	mkdir -p $(WASM_BUILD)/sysroot/lib
	ln -sfn $(WASI_INCLUDE) $(WASM_BUILD)/sysroot/include
	ln -sfn $(WASI_LIB) $(WASM_BUILD)/sysroot/lib/wasm32-wasi
	$(PYTHON) wasm/gen_objects.py runner/packages $(WASM_BUILD)/gen
	$(WASM_CC) $(WASM_CFLAGS) $(WASM_LDFLAGS) -o $@.tmp $(WASM_SOURCES)
	mv $@.tmp $@

test:
	$(PYTHON) -m pytest

clean:
	rm -rf build
