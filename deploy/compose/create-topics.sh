#!/usr/bin/env bash
# One-shot topic setup for the compose stack: input topic, its dead-letter topic, result topic.
# Idempotent (--if-not-exists). Partitions bound the consumer group's useful size.
set -euo pipefail
BIN=/opt/kafka/bin/kafka-topics.sh
for topic in "${POSTS_TOPIC}" "${POSTS_TOPIC}.dlq" "${OUTPUT_TOPIC}"; do
  "${BIN}" --bootstrap-server "${KAFKA_BOOTSTRAP}" --create --if-not-exists \
    --topic "${topic}" --partitions "${PARTITIONS}" --replication-factor 1
done
"${BIN}" --bootstrap-server "${KAFKA_BOOTSTRAP}" --describe --topic "${POSTS_TOPIC}"
