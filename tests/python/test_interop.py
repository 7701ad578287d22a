"""Interop: other systems read our events with the .avsc files alone, and we read theirs.

Uses fastavro only; never our code to decode what we wrote. Needs CHAOSEATER_BIN (set by .ci/run).
"""

import io
import json
import os
import pathlib
import subprocess

import fastavro
import pytest
from fastavro.schema import fingerprint, to_parsing_canonical_form

ROOT = pathlib.Path(__file__).resolve().parents[2]
AVRO = ROOT / "schemas" / "avro"
GOLDEN = ROOT / "schemas" / "tests" / "golden"
BIN = os.environ.get("CHAOSEATER_BIN", str(ROOT / "target" / "release" / "chaoseater"))
MAGIC = b"\xc3\x01"

HEALTH_V2 = {
    "type": "record",
    "name": "RegionHealthSampled",
    "namespace": "io.chaoseater.events",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "region", "type": "string"},
        {"name": "status", "type": {"type": "enum", "name": "HealthStatus", "symbols": ["HEALTHY", "DEGRADED", "FAILED"]}},
        {"name": "latency_ms", "type": ["null", "double"], "default": None},
        {"name": "http_status", "type": ["null", "int"], "default": None},
        {"name": "message", "type": ["null", "string"], "default": None},
        {"name": "probe_host", "type": ["null", "string"], "default": None},
    ],
}


def parse(schema):
    return fastavro.parse_schema(schema)


def header(parsed):
    """Single-object header: C3 01 + the CRC-64-AVRO fingerprint (little-endian) of the canonical form."""
    return MAGIC + bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


def schemas_by_fingerprint():
    out = {}
    for path in sorted(AVRO.glob("*.avsc")):
        parsed = parse(json.loads(path.read_text()))
        out[header(parsed)[2:]] = (path.name, parsed)
    return out


def single_object(parsed, record):
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, record)
    return header(parsed) + buf.getvalue()


def decode_with_chaoseater(data, tmp_path, *extra_args):
    path = tmp_path / "event.bin"
    path.write_bytes(data)
    return subprocess.run(
        [BIN, *extra_args, "schemas", "decode", str(path)],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, cwd=tmp_path, timeout=60,
    )


def test_every_golden_event_decodes_with_the_avsc_files_alone():
    known = schemas_by_fingerprint()
    goldens = sorted(GOLDEN.glob("*.bin"))
    assert len(goldens) == len(known) == 27
    for path in goldens:
        data = path.read_bytes()
        assert data[:2] == MAGIC, path.name
        name, parsed = known[data[2:10]]  # KeyError: a fingerprint fastavro does not compute
        assert name == path.name.replace(".bin", ".avsc")
        body = io.BytesIO(data[10:])
        record = fastavro.schemaless_reader(body, parsed, None)
        assert body.read() == b"", f"{path.name}: trailing bytes"
        assert record["event_id"]
        assert record["occurred_at"].year == 2026


def test_golden_run_requested_carries_typed_parameters():
    known = schemas_by_fingerprint()
    data = (GOLDEN / "run_requested.bin").read_bytes()
    _, parsed = known[data[2:10]]
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), parsed, None)
    params = record["experiment"]["parameters"]
    assert params["latency_ms"] == 100 and params["ratio"] == 0.25 and params["strict"] is True
    assert params["hosts"] == ["model", "features"]
    assert record["experiment"]["rollback"]["strategy"] == "GRADUAL"
    assert record["mode"] == "PARALLEL" and record["min_score"] == 70.0


def test_we_decode_what_fastavro_wrote(tmp_path):
    parsed = parse(json.loads((AVRO / "run_requested.avsc").read_text()))
    record = {
        "event_id": "e-python-1",
        "occurred_at": 1767225600123,
        "run_id": "run-from-python",
        "experiment": {
            "name": "py-latency",
            "layer": "INFRASTRUCTURE",
            "fault_type": "network_latency",
            "parameters": {"latency_ms": 250, "ratio": 0.5, "hosts": ["a", "b"], "note": "x", "strict": False},
            "duration_ms": 1500,
            "rollback": {
                "strategy": "CANARY", "timeout_seconds": 300, "health_check_interval_s": 5.0,
                "failure_threshold": 0.1, "canary_percentage": 10.0, "gradual_steps": 5,
                "auto_pause_on_error": True,
            },
            "tags": {"source": "python"},
        },
        "regions": ["eu-west"],
        "mode": "SEQUENTIAL",
        "max_concurrent": 3,
        "fail_fast": True,
        "blast_radius_percent": 100.0,
        "min_score": None,
        "requested_by": "pytest",
    }
    result = decode_with_chaoseater(single_object(parsed, record), tmp_path)
    assert result.returncode == 0, result.stderr
    event = json.loads(result.stdout)
    assert event["type"] == "RunRequested"
    assert event["occurred_at"] == 1767225600123
    assert event["experiment"]["parameters"] == {"latency_ms": 250, "ratio": 0.5, "hosts": ["a", "b"], "note": "x", "strict": False}
    assert event["experiment"]["rollback"]["strategy"] == "CANARY"
    assert event["mode"] == "SEQUENTIAL" and event["fail_fast"] is True and event["min_score"] is None


def test_old_reader_reads_a_schema_that_gained_an_optional_field(tmp_path):
    v2 = parse(HEALTH_V2)
    record = {
        "event_id": "e-2", "occurred_at": 5, "region": "eu", "status": "DEGRADED",
        "latency_ms": 12.5, "http_status": 503, "message": "slow", "probe_host": "p-1",
    }
    data = single_object(v2, record)

    # Without the newer writer schema, the fingerprint is unknown: a clear error, exit code 2.
    unknown = decode_with_chaoseater(data, tmp_path)
    assert unknown.returncode == 2
    assert "unknown schema fingerprint" in unknown.stderr

    # Told of it (schemas.extra_dir), today's reader resolves the bytes and drops the field it lacks.
    extra = tmp_path / "writer-schemas"
    extra.mkdir()
    (extra / "region_health_sampled_v2.avsc").write_text(json.dumps(HEALTH_V2))
    (tmp_path / "chaoseater.toml").write_text(f'[schemas]\nextra_dir = "{extra}"\n')
    known = decode_with_chaoseater(data, tmp_path)
    assert known.returncode == 0, known.stderr
    event = json.loads(known.stdout)
    assert event["region"] == "eu" and event["http_status"] == 503 and "probe_host" not in event


def test_new_reader_reads_our_bytes_and_fills_the_default():
    data = (GOLDEN / "region_health_sampled.bin").read_bytes()
    known = schemas_by_fingerprint()
    _, writer = known[data[2:10]]
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), writer, parse(HEALTH_V2))
    assert record["probe_host"] is None
    assert record["region"] == "eu-west" and record["status"] == "DEGRADED"


def test_version_1_ab_test_bytes_resolve_into_version_2_for_any_avro_reader(tmp_path):
    """AbTestRequested gained per-variant experiments, metrics, confidence and tolerance; a stranger with
    both .avsc files reads version 1's bytes as version 2 (Avro's own resolution rules), and so do we."""
    v1 = parse(json.loads((AVRO / "previous" / "ab_test_requested.v1.avsc").read_text()))
    v2 = parse(json.loads((AVRO / "ab_test_requested.avsc").read_text()))
    data = (GOLDEN / "previous" / "ab_test_requested.v1.bin").read_bytes()
    assert data[2:10] == header(v1)[2:]
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), v1, v2)
    assert record["alpha"] == 0.05 and record["confidence"] == 0.98 and record["tolerance"] == 0.25
    assert record["metrics"] == [] and record["variant_b"]["experiment"] is None
    assert record["variant_a"]["regions"] == ["eu-west"]
    out = decode_with_chaoseater(data, tmp_path)
    assert out.returncode == 0, out.stderr
    ours = json.loads(out.stdout)
    assert ours["alpha"] == 0.05 and ours["variant_b"]["experiment"] is None and ours["metrics"] == []


def test_version_1_region_results_resolve_into_version_2(tmp_path):
    """RegionResult's metrics gained the latency objective, coverage and the accuracy interval with
    score_version 2; version 1's bytes read with every new field null and their score_version kept."""
    v1 = parse(json.loads((AVRO / "previous" / "region_result.v1.avsc").read_text()))
    v2 = parse(json.loads((AVRO / "region_result.avsc").read_text()))
    data = (GOLDEN / "previous" / "region_result.v1.bin").read_bytes()
    assert data[2:10] == header(v1)[2:]
    record = fastavro.schemaless_reader(io.BytesIO(data[10:]), v1, v2)
    assert record["score_version"] == 1
    assert record["metrics"]["slo_latency_ms"] is None and record["metrics"]["coverage"] is None
    out = decode_with_chaoseater(data, tmp_path)
    assert out.returncode == 0, out.stderr
    ours = json.loads(out.stdout)
    assert ours["score_version"] == 1 and ours["metrics"]["accuracy_degradation_low"] is None


def test_garbage_is_refused_with_exit_code_2(tmp_path):
    result = decode_with_chaoseater(b"\xc3\x01" + b"\x00" * 8 + b"junk", tmp_path)
    assert result.returncode == 2
    assert "error:" in result.stderr


def test_confluent_framing_when_ids_are_configured(tmp_path):
    """Confluent wire format (magic 0 + 4-byte schema id) decodes once the registry ids are configured."""
    parsed = parse(json.loads((AVRO / "region_removed.avsc").read_text()))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, {"event_id": "e-9", "occurred_at": 7, "region": "eu"})
    data = b"\x00" + (42).to_bytes(4, "big") + buf.getvalue()
    unknown = decode_with_chaoseater(data, tmp_path)
    assert unknown.returncode == 2 and "unknown Confluent schema id 42" in unknown.stderr
    (tmp_path / "chaoseater.toml").write_text("[schemas.confluent_ids]\nRegionRemoved = 42\n")
    known = decode_with_chaoseater(data, tmp_path)
    assert known.returncode == 0, known.stderr
    assert json.loads(known.stdout)["region"] == "eu"
    (tmp_path / "chaoseater.toml").write_text("[schemas.confluent_ids]\nNoSuchEvent = 1\n")
    bad = decode_with_chaoseater(data, tmp_path)
    assert bad.returncode == 1 and "unknown event" in bad.stderr
