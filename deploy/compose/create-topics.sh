#!/usr/bin/env bash
# Creates the stampflow topics on the compose broker; run by the kafka-topics service (apache/kafka image).
#   BOOTSTRAP=kafka:9092 TOPICS="name:partitions ..." create-topics.sh
# Idempotent (--if-not-exists), so `docker compose up` can run it on every start. An existing topic keeps its
# partition count: Kafka can add partitions but that reshuffles keys, so that stays a deliberate manual step.
set -euo pipefail

: "${BOOTSTRAP:?BOOTSTRAP (host:port) is required}"
: "${TOPICS:?TOPICS (name:partitions ...) is required}"
KAFKA_TOPICS="${KAFKA_TOPICS:-/opt/kafka/bin/kafka-topics.sh}"

for spec in $TOPICS; do
  name="${spec%%:*}"
  partitions="${spec#*:}"
  if [[ -z "$name" || "$name" == "$spec" || ! "$partitions" =~ ^[1-9][0-9]*$ ]]; then
    echo "create-topics: bad topic spec '$spec' (want name:partitions)" >&2
    exit 2
  fi
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \
    --topic "$name" --partitions "$partitions" --replication-factor 1
  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --describe --topic "$name" | head -n 1
done
