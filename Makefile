# IoTix: the two commands are `make demo` and `make test`; both set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pabot starts `robot` from PATH: the venv's bin must come first.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: all install demo test unit acceptance acceptance-pabot lint libdoc bench clean

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/iotix validate models
	$(BIN)/robot --outputdir results --xunit xunit.xml suites/demo

test: $(STAMP) lint unit acceptance acceptance-pabot

lint: $(STAMP)
	$(BIN)/ruff check libraries tests tools
	$(BIN)/robocop check resources suites

unit: $(STAMP)
	$(BIN)/pytest tests

acceptance: $(STAMP)
	$(BIN)/robot --outputdir results/acceptance --xunit xunit.xml suites/acceptance

acceptance-pabot: $(STAMP)
	$(BIN)/pabot --processes 2 --testlevelsplit --outputdir results/acceptance-pabot --xunit xunit.xml suites/acceptance

libdoc: $(STAMP)
	for lib in DeviceFleet ProtocolClient Chaos Metrics; do \
	  $(BIN)/libdoc iotix.$$lib results/$$lib.html || exit 1; done

bench: $(STAMP)
	$(BIN)/python tools/bench/mqtt_fleet.py
	$(BIN)/python tools/bench/coap_http.py --protocol both
	$(BIN)/python tools/bench/kafka_tls.py

clean:
	rm -rf $(VENV) results/* build *.egg-info
	touch results/.gitkeep
