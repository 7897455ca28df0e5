# IoTix: the two commands are `make demo` and `make test`; both set everything up on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# pabot starts `robot` from PATH: the venv's bin must come first.
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: all install demo test unit dryrun acceptance acceptance-pabot lint libdoc bench clean \
        system-packages-demo system-packages-test

all: test

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# The system packages each command needs (mosquitto, mosquitto-clients, libcoap3-bin; python3-venv until .venv
# exists), checked first: installed with apt-get when root, otherwise one message names each missing package and
# the command that installs it, and nothing runs. See tools/system-packages.sh.
system-packages-demo system-packages-test:
	@PYTHON='$(PYTHON)' VENV='$(VENV)' bash tools/system-packages.sh $(@:system-packages-%=%)

demo: system-packages-demo $(STAMP)
	$(BIN)/iotix validate models models/scenarios
	$(BIN)/robot --outputdir results --xunit xunit.xml suites/demo

test: system-packages-test $(STAMP) lint unit dryrun acceptance acceptance-pabot

lint: $(STAMP)
	$(BIN)/ruff check libraries tests tools
	$(BIN)/robocop check resources suites

unit: $(STAMP)
	$(BIN)/pytest tests

# Every suite in Robot's dry run: keyword names, argument counts and conversions, imports; no test runs.
dryrun: $(STAMP)
	$(BIN)/robot --dryrun --outputdir results/dryrun suites

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
	$(BIN)/python tools/bench/fault_layer.py --rounds 2
	$(BIN)/python tools/bench/fault_outage.py
	$(BIN)/python tools/bench/metrics_export.py --rounds 4

clean:
	rm -rf $(VENV) results/* build *.egg-info
	touch results/.gitkeep
