# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
KAFKA_RUN ?= .kafka-run
STAMPFLOW_DATA ?= $(abspath ../shared/data)
DEMO_INPUT ?= tests/fixtures/alerts
DEMO_OUT ?= demo-results.jsonl
DEMO_DEAD ?= demo-dead-letters
# Mock-trained families: a few committed packets of their format (tests/fixtures/packets, made by their mock writers).
DEMO_PACKETS ?= tests/fixtures/packets/deepmerge-mock.avro tests/fixtures/packets/candels-mock.avro \
	tests/fixtures/packets/sdss-spin-mock.avro
# Real FIRST images (MiraBest FITS: 3 FRI, 3 FRII) from the shared data, turned into packets at demo time: FIRST's
# non-commercial terms keep them out of the repository.
DEMO_FIRST_FITS ?= $(wordlist 1,3,$(sort $(wildcard $(STAMPFLOW_DATA)/radio/mirabest/fits_subset/100_*.fits))) \
	$(wordlist 1,3,$(sort $(wildcard $(STAMPFLOW_DATA)/radio/mirabest/fits_subset/200_*.fits)))
DEMO_FIRST := $(if $(strip $(DEMO_FIRST_FITS)),demo-results.first-packets.avro)
comma := ,
DEMO_MODELS ?= stargal,$(if $(DEMO_FIRST),radio-first$(comma))deepmerge,morphology-candels,spin
PYTEST_ARGS ?=
export STAMPFLOW_DATA

.PHONY: demo test test-unit install dev kafka-start kafka-stop bench bench-models bench-decode clean prometheus-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --no-cache-dir --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-cache-dir -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q --no-cache-dir -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

## make demo: every family on real input where the project has it, no broker: real ZTF alerts through star/galaxy,
## real FIRST images through radio-first, and the mock-trained families on a few packets of their format. Prints one
## table per model, then how to open the viewer on what it wrote.
demo: install
ifeq ($(DEMO_FIRST),)
	@echo "make demo: no FIRST images under $(STAMPFLOW_DATA)/radio/mirabest/fits_subset; radio-first is left out"
else
	@$(BIN)/stampflow replay $(DEMO_FIRST_FITS) --format radio-fits --out $(DEMO_FIRST) --quiet >/dev/null
endif
	@$(BIN)/stampflow classify $(DEMO_INPUT) $(DEMO_FIRST) $(DEMO_PACKETS) --models $(DEMO_MODELS) --out $(DEMO_OUT) \
		--dead-letters $(DEMO_DEAD) --show 0 --quiet > demo-results.summary.json
	@$(BIN)/stampflow view $(DEMO_OUT) --inputs $(DEMO_INPUT) $(DEMO_FIRST) $(DEMO_PACKETS) --dead-letters $(DEMO_DEAD) \
		--table

## make test: the whole suite, unit and integration, against a real Kafka broker started and stopped here.
test: dev prometheus-tools
	bash deploy/tools/install-validators.sh
	bash deploy/tools/install-chromium.sh
	@bash -c 'bash deploy/kafka/kafka.sh start $(KAFKA_RUN) >/dev/null || exit 1; \
	trap "bash deploy/kafka/kafka.sh stop $(KAFKA_RUN) >/dev/null" EXIT; \
	TEST_KAFKA_BOOTSTRAP=$$(cat $(KAFKA_RUN)/bootstrap) $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure"; exit 1; fi; exit $$rc'

test-unit: dev prometheus-tools
	bash deploy/tools/install-validators.sh
	bash deploy/tools/install-chromium.sh
	$(BIN)/python -m pytest -m "not integration" $(PYTEST_ARGS)

## Prometheus and promtool from Debian (the rule tests and the real-Prometheus integration test use them).
prometheus-tools:
	bash deploy/prometheus/install.sh

kafka-start:
	bash deploy/kafka/kafka.sh start $(KAFKA_RUN)
kafka-stop:
	bash deploy/kafka/kafka.sh stop $(KAFKA_RUN)

bench: dev
	$(BIN)/python bench/run_pipeline_bench.py

## make bench-models: inference images/s per model at batch 1/32/256 (serving tf.function vs model.predict), RSS.
bench-models: dev
	$(BIN)/python bench/run_model_bench.py

## make bench-decode: decoder throughput per engine (generated reader, fastavro, auto, with stamps); reports only.
bench-decode: dev
	$(BIN)/python bench/decode_throughput.py

clean:
	rm -rf $(VENV) $(KAFKA_RUN) .pytest_cache demo-results.jsonl demo-dead-letters demo-results.first-packets.avro demo-results.summary.json
