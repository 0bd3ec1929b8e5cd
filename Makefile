# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
KAFKA_RUN ?= .kafka-run
STAMPFLOW_DATA ?= $(abspath ../shared/data)
DEMO_INPUT ?= tests/fixtures/alerts
DEMO_OUT ?= demo-results.jsonl
PYTEST_ARGS ?=
export STAMPFLOW_DATA

.PHONY: demo test test-unit install dev kafka-start kafka-stop bench bench-models bench-decode clean prometheus-tools

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[dev]'
	@touch $@ $(VENV)/.installed

install: $(VENV)/.installed
dev: $(VENV)/.installed-dev

## make demo: classify the bundled real ZTF alerts with the bundled star/galaxy model; no broker needed.
demo: install
	$(BIN)/stampflow classify $(DEMO_INPUT) --out $(DEMO_OUT) --dead-letters demo-dead-letters --show 20

## make test: the whole suite, unit and integration, against a real Kafka broker started and stopped here.
test: dev prometheus-tools
	bash deploy/tools/install-validators.sh
	@bash -c 'bash deploy/kafka/kafka.sh start $(KAFKA_RUN) >/dev/null || exit 1; \
	trap "bash deploy/kafka/kafka.sh stop $(KAFKA_RUN) >/dev/null" EXIT; \
	TEST_KAFKA_BOOTSTRAP=$$(cat $(KAFKA_RUN)/bootstrap) $(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; that is a failure"; exit 1; fi; exit $$rc'

test-unit: dev prometheus-tools
	bash deploy/tools/install-validators.sh
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
	rm -rf $(VENV) $(KAFKA_RUN) .pytest_cache demo-results.jsonl demo-dead-letters
