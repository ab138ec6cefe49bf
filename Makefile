# vsrbus: two commands on a fresh Debian bookworm machine (as root):
#   make run    install what is missing, build, run the demo
#   make test   install what is missing, build, run the whole test suite
#   make attack build, rerun the attacks on loopback, write bench/attack/results/latest.md
BUILD ?= build
CMAKE_FLAGS ?= -DVSR_WERROR=ON
JOBS ?= 2

.PHONY: all deps build run test install bench attack clean

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

clean:
	rm -rf $(BUILD)
