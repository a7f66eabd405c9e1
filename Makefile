# ca-server: `make run` and `make test` each set up what they need on a fresh machine.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Debian packages the tests use: the openssl CLI (verify, ocsp, crl), chromium (browser tests),
# certbot, lego, Caddy, dehydrated and uacme (real ACME clients), pebble (its pebble-challtestsrv answers DNS for them),
# nginx (an OCSP cache in front of the server), strongswan-pki with its openssl and curl plugins (in
# libstrongswan-standard- and -extra-plugins), curl (EST) and scep (micromdm's scepclient).
TEST_DEBS := openssl chromium certbot lego caddy dehydrated uacme pebble nginx postgresql softhsm2 strongswan-pki libstrongswan-standard-plugins libstrongswan-extra-plugins curl scep certmonger dbus age golang-go golang-golang-x-mod-dev golang-golang-x-crypto-dev openjdk-17-jdk-headless libnss3-tools slapd

# ...and those the benchmark adds: wrk (the load), cfssl (a peer for signing and OCSP).
BENCH_DEBS := wrk golang-cfssl

.PHONY: run test bench lint system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.installed-test: setup.cfg pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(VENV)/.installed

# make run PORT=8080, or BASE_URL=http://ca.corp.example (written into every certificate at init;
# the README's "Choosing base_url"). Without them: http://127.0.0.1:5000.
PORT ?=
HOST ?=
BASE_URL ?= $(if $(PORT),http://127.0.0.1:$(PORT))

## run: install, create the CA in instance/ if absent, serve on http://127.0.0.1:5000
run: $(VENV)/.installed
	$(BIN)/ca-server init --if-absent $(if $(BASE_URL),--base-url '$(BASE_URL)')
	$(BIN)/ca-server serve $(if $(HOST),--host '$(HOST)') $(if $(PORT),--port '$(PORT)')

## test: install with test extras and the Debian packages the tests use, run pytest
test: $(VENV)/.installed-test system-deps
	$(BIN)/python -m pytest

## bench: the benchmark (not part of test); writes benchmarks/latest.json
bench: $(VENV)/.installed-test system-deps
	@sh scripts/ensure-debian-packages.sh $(BENCH_DEBS)
	$(BIN)/python -m benchmarks.run

lint: $(VENV)/.installed-test
	$(BIN)/ruff check ca_server tests

system-deps:
	@sh scripts/ensure-debian-packages.sh $(TEST_DEBS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
