# sluice — GNU make + pkg-config.
#
#   make            release build: build/sluice
#   make run        deps, build, start `sluice serve` and deploy the sample
#   make test       deps, ASan+UBSan build, unit + e2e + fuzz-smoke tests
#   make fuzz       run every fuzzer for FUZZ_SECONDS (default 300) each
#   make lint       banned-function check + clang-format check
#   make bench      benchmarks (bench/)

PKGS      := libuv sqlite3 jansson yaml-0.1 libarchive libcurl libcrypto libseccomp libnghttp2
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lm

CC        ?= cc
WARN      := -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter -Wformat=2 -Wvla
BASE_CFLAGS := -std=gnu11 -D_GNU_SOURCE -g $(WARN) -Isrc $(PKG_CFLAGS)
VERSION   := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GIT_REV   := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
DEFS      := -DSL_VERSION='"$(VERSION)"' -DSL_GIT_REV='"$(GIT_REV)"'

SRC       := $(wildcard src/*.c)
LIB_SRC   := $(filter-out src/main.c,$(SRC))
UNIT_SRC  := $(wildcard tests/unit/test_*.c)
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
EXAMPLES  := examples/hello/hello

# Release build
REL_DIR   := build/release
REL_OBJ   := $(patsubst src/%.c,$(REL_DIR)/%.o,$(SRC))
REL_CFLAGS := $(BASE_CFLAGS) -O2 -fstack-protector-strong -D_FORTIFY_SOURCE=2

# Sanitizer build (tests)
SAN_DIR   := build/asan
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SAN_OBJ   := $(patsubst src/%.c,$(SAN_DIR)/%.o,$(SRC))
SAN_LIB_OBJ := $(patsubst src/%.c,$(SAN_DIR)/%.o,$(LIB_SRC))
SAN_CFLAGS := $(BASE_CFLAGS) -O1 $(SAN_FLAGS)
UNIT_BIN  := $(patsubst tests/unit/%.c,$(SAN_DIR)/tests/%,$(UNIT_SRC))

# Fuzzers (clang + libFuzzer)
FUZZ_DIR  := build/fuzz
FUZZ_CC   := clang
FUZZ_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer
FUZZ_LIB_OBJ := $(patsubst src/%.c,$(FUZZ_DIR)/%.o,$(LIB_SRC))
FUZZ_BIN  := $(patsubst tests/fuzz/%.c,$(FUZZ_DIR)/%,$(FUZZ_SRC))
FUZZ_SECONDS ?= 300
FUZZ_SMOKE_SECONDS ?= 10

.PHONY: FORCE all build run test unit e2e fuzz-smoke fuzz lint format deps bench clean examples asan soak

all: build
build: $(REL_DIR)/sluice examples
asan: $(SAN_DIR)/sluice examples

build/sluice: $(REL_DIR)/sluice
	@ln -sf release/sluice build/sluice

$(REL_DIR)/sluice: $(REL_OBJ)
	$(CC) $(REL_CFLAGS) -o $@ $^ $(PKG_LIBS) -pie
	@ln -sf release/sluice build/sluice

$(REL_DIR)/%.o: src/%.c $(wildcard src/*.h) | $(REL_DIR)
	$(CC) $(REL_CFLAGS) $(if $(filter version,$*),$(DEFS)) -fPIE -c -o $@ $<

$(SAN_DIR)/sluice: $(SAN_OBJ)
	$(CC) $(SAN_CFLAGS) -o $@ $^ $(PKG_LIBS)

$(SAN_DIR)/%.o: src/%.c $(wildcard src/*.h) | $(SAN_DIR)
	$(CC) $(SAN_CFLAGS) $(if $(filter version,$*),$(DEFS)) -c -o $@ $<

$(SAN_DIR)/tests/%: tests/unit/%.c $(SAN_LIB_OBJ) | $(SAN_DIR)/tests
	$(CC) $(SAN_CFLAGS) -o $@ $< $(SAN_LIB_OBJ) $(PKG_LIBS) $(shell pkg-config --libs cmocka)

$(FUZZ_DIR)/%.o: src/%.c $(wildcard src/*.h) | $(FUZZ_DIR)
	$(FUZZ_CC) $(BASE_CFLAGS) $(if $(filter version,$*),$(DEFS)) -O1 $(FUZZ_FLAGS) -c -o $@ $<

$(FUZZ_DIR)/%: tests/fuzz/%.c $(FUZZ_LIB_OBJ) | $(FUZZ_DIR)
	$(FUZZ_CC) $(BASE_CFLAGS) -O1 -fsanitize=fuzzer,address,undefined -o $@ $< $(FUZZ_LIB_OBJ) $(PKG_LIBS)

# The version object is rebuilt every time so it carries the current commit.
$(REL_DIR)/version.o $(SAN_DIR)/version.o $(FUZZ_DIR)/version.o: FORCE
FORCE:

$(REL_DIR) $(SAN_DIR) $(SAN_DIR)/tests $(FUZZ_DIR):
	@mkdir -p $@

examples: $(EXAMPLES)
examples/hello/hello: examples/hello/hello.c
	$(CC) -std=gnu11 -O2 -Wall -Wextra -Werror -static -o $@ $<

deps:
	@sh scripts/deps.sh

run: deps build
	@sh scripts/run.sh

test: deps lint
	@$(MAKE) --no-print-directory asan $(UNIT_BIN) $(FUZZ_BIN)
	@$(MAKE) --no-print-directory unit e2e fuzz-smoke

unit: $(UNIT_BIN)
	@sh scripts/run-unit.sh $(UNIT_BIN)

e2e: $(SAN_DIR)/sluice examples
	SLUICE_BIN=$(CURDIR)/$(SAN_DIR)/sluice /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/e2e

fuzz-smoke: $(FUZZ_BIN)
	@sh scripts/run-fuzz.sh $(FUZZ_SMOKE_SECONDS) $(FUZZ_BIN)

fuzz: $(FUZZ_BIN)
	@sh scripts/run-fuzz.sh $(FUZZ_SECONDS) $(FUZZ_BIN)

# Soak: one ASan daemon under mixed load and scheduled faults (tests/soak).
soak: asan
	SLUICE_BIN=$(CURDIR)/$(SAN_DIR)/sluice SOAK_SECONDS=$(or $(SOAK_SECONDS),600) \
		/usr/bin/python3 tests/soak/soak.py

lint:
	@sh scripts/lint.sh

format:
	clang-format -i src/*.c src/*.h tests/unit/*.c tests/fuzz/*.c examples/hello/*.c

bench: build
	@sh bench/run.sh $(BENCH_ARGS)

clean:
	rm -rf build $(EXAMPLES)

# Keep intermediate objects between runs.
.SECONDARY:
