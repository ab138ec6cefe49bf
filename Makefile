# vsrbus: two commands on a fresh Debian bookworm machine (as root):
#   make run    install what is missing, build, run the demo
#   make test   install what is missing, build, run the whole test suite
#   make attack build, rerun the attacks on loopback, write bench/attack/results/latest.md
#   make sim    build, run 300 seeds of the deterministic simulator (docs/simulation.md)
BUILD ?= build
CMAKE_FLAGS ?= -DVSR_WERROR=ON
JOBS ?= 2

.PHONY: all deps build run test install bench attack sim clean

all: build

deps:
	@./scripts/deps.sh

$(BUILD)/CMakeCache.txt: | deps
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

run: build
	./scripts/run-demo.sh $(BUILD)/vsrbus

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j$(JOBS)

install: build
	cmake --install $(BUILD)

bench: deps
	./bench/run.sh

# The hostile-network attacks of issue 12, measured (bench/attack/README.md); not part of test.
attack: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS) --target vsrbus_cli vsrbus_attack
	BUILD=$(BUILD) ./bench/attack/run.sh

# The deterministic simulator: SEEDS seeds (default 300, from the clock or FROM) on JOBS
# processes; prints seeds/min and simulated seconds per wall second, and every failing seed with
# its replay command (docs/simulation.md).
SEEDS ?= 300
sim: build
	BIN=$(BUILD)/vsrbus SEEDS=$(SEEDS) JOBS=$(JOBS) ./scripts/sim.sh

clean:
	rm -rf $(BUILD)
