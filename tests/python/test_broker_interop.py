"""Interop on the real broker (Apache Kafka, started by .ci/run): confluent-kafka and fastavro with the
.avsc files alone on one side, our binary on the other. Needs CHAOSEATER_BIN and CHAOSEATER_TEST_BROKERS.
"""

import io
import json
import os
import subprocess
import time
import uuid

import fastavro
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from test_interop import AVRO, BIN, parse, schemas_by_fingerprint, single_object


@pytest.fixture
def bus():
    brokers = os.environ.get("CHAOSEATER_TEST_BROKERS")
    if not brokers:
        pytest.fail("CHAOSEATER_TEST_BROKERS is not set: run the suite with `bash .ci/run`, which starts Kafka")
    prefix = f"py-{uuid.uuid4().hex[:12]}"

    def chaoseater(*args, timeout=120):
        return subprocess.run(
            [BIN, "--brokers", brokers, "--topic-prefix", prefix, *args],
            capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=timeout,
            env=dict(os.environ, CHAOSEATER_LOG="warn"),
        )

    created = chaoseater("topics", "create")
    assert created.returncode == 0, created.stderr
    return brokers, prefix, chaoseater


def test_our_subscriber_decodes_what_confluent_kafka_published(bus):
    brokers, prefix, chaoseater = bus
    parsed = parse(json.loads((AVRO / "region_health_sampled.avsc").read_text()))
    record = {
        "event_id": str(uuid.uuid4()),
        "occurred_at": int(time.time() * 1000),
        "region": "py-west",
        "status": "DEGRADED",
        "latency_ms": 412.5,
        "http_status": 200,
        "message": "slow from Python",
    }
    producer = Producer({"bootstrap.servers": brokers, "acks": "all", "enable.idempotence": True})
    producer.produce(
        f"{prefix}.health", key=b"py-west", value=single_object(parsed, record),
        headers=[("chaoseater.type", b"RegionHealthSampled"), ("chaoseater.id", record["event_id"].encode())],
    )
    assert producer.flush(30) == 0, "not acknowledged"

    tail = chaoseater("tail", "health", "--from-beginning", "--max-messages", "1", "--idle-timeout", "60")
    assert tail.returncode == 0, tail.stderr
    line = json.loads(tail.stdout.splitlines()[0])
    assert line["key"] == "py-west"
    event = line["event"]
    assert event["type"] == "RegionHealthSampled"
    assert (event["event_id"], event["region"], event["status"]) == (record["event_id"], "py-west", "DEGRADED")
    assert event["latency_ms"] == 412.5 and event["message"] == "slow from Python"


def test_confluent_kafka_reads_and_fastavro_decodes_what_we_published(bus):
    brokers, prefix, chaoseater = bus
    added = chaoseater("region", "add", "py-east", "--endpoint", "http://127.0.0.1:9", "--priority", "7")
    assert added.returncode == 0, added.stderr

    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"{prefix}-reader", "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(f"{prefix}.regions", 0, 0)])
        deadline = time.monotonic() + 60
        message = None
        while message is None and time.monotonic() < deadline:
            polled = consumer.poll(1.0)
            if polled is not None and polled.error() is None:
                message = polled
        assert message is not None, "nothing on the regions topic within a minute"
    finally:
        consumer.close()

    payload = message.value()
    name, schema = schemas_by_fingerprint()[payload[2:10]]
    assert name == "region_registered.avsc"
    record = fastavro.schemaless_reader(io.BytesIO(payload[10:]), schema)
    assert (record["region"], record["endpoint"], record["priority"]) == ("py-east", "http://127.0.0.1:9", 7)
    assert message.key() == b"py-east"
    assert dict(message.headers())["chaoseater.type"] == b"RegionRegistered"
