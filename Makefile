# Convenience targets over the scripts; the scripts are the reference.
PREFIX ?= /usr/local

.PHONY: all build test e2e demo token-demo install install-emulator uninstall

all: build

build:
	cargo build --release -p zkpkcs11 -p zkemu

test:
	scripts/test.sh

e2e:
	tests/e2e/run.sh

demo:
	scripts/demo.sh

token-demo:
	scripts/token-demo.sh

install:
	scripts/install-module.sh --prefix $(PREFIX)

install-emulator:
	scripts/install-module.sh --prefix $(PREFIX) --emulator

uninstall:
	scripts/install-module.sh --prefix $(PREFIX) --uninstall
