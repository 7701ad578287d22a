use std::path::PathBuf;

use apache_avro::types::{Record, Value};
use proptest::prelude::*;

use super::*;
use crate::events::{HealthStatus, RegionHealthSampled};
use crate::ids::{EventId, RegionName, TimestampMs};
use crate::samples;

fn codec() -> Codec {
    Codec::new().expect("shipped schemas parse")
}

#[test]
fn every_sample_round_trips() {
    let codec = codec();
    for event in samples::all() {
        let bytes = codec.encode(&event).unwrap();
        assert_eq!(bytes[..2], SINGLE_OBJECT_MAGIC);
        assert_eq!(codec.decode(&bytes).unwrap(), event, "{}", event.kind().name());
    }
}

/// Every shipped schema compiles for the direct reader (else its events would take the slow path).
#[test]
fn every_shipped_schema_has_a_direct_plan() {
    let codec = codec();
    for &kind in EventKind::ALL {
        let (fp, _) = codec.store().current(kind);
        assert!(codec.store().plans.contains_key(&fp), "{} has no direct plan", kind.name());
    }
}

/// The direct reader and apache-avro's resolving reader agree on a payload: the same event, or both refuse.
/// One known difference: apache-avro reads a union index, string or boolean cut off by the end of the
/// input as null (so a truncated message can decode), which the direct reader refuses as cut off.
fn readers_agree(codec: &Codec, bytes: &[u8]) -> std::result::Result<(), String> {
    let Ok((kind, _, writer, body)) = codec.writer_of(bytes) else { return Ok(()) };
    let direct = codec.decode(bytes);
    let resolved = codec.decode_resolved(kind, writer, body);
    match (&direct, &resolved) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Err(_), Err(_)) => Ok(()),
        (Err(e), Ok(_)) if e.to_string().contains("bytes left") || e.to_string().contains("input ends") => Ok(()),
        _ => Err(format!("{}: direct {direct:?}, apache-avro {resolved:?}", kind.name())),
    }
}

#[test]
fn direct_reader_reads_every_sample_as_apache_avro_does() {
    let codec = codec();
    for event in samples::all() {
        let bytes = codec.encode(&event).unwrap();
        readers_agree(&codec, &bytes).unwrap();
        let (kind, _, writer, body) = codec.writer_of(&bytes).unwrap();
        assert_eq!(codec.decode_resolved(kind, writer, body).unwrap(), event);
    }
}

fn golden_dir() -> PathBuf {
    crate::package_dir!().join("tests/golden")
}

/// The bytes other systems see must not change by accident. `UPDATE_GOLDEN=1` rewrites them on purpose.
#[test]
fn golden_bytes_for_every_schema() {
    let codec = codec();
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    for event in samples::all() {
        let kind = event.kind();
        let path = golden_dir().join(kind.file_name().replace(".avsc", ".bin"));
        let bytes = codec.encode(&event).unwrap();
        if update {
            std::fs::write(&path, &bytes).unwrap();
            continue;
        }
        let golden =
            std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
        assert_eq!(bytes, golden, "{} encodes differently from {}", kind.name(), path.display());
        assert_eq!(codec.decode(&golden).unwrap(), event);
    }
}

/// Our writer sorts map keys; otherwise it must write exactly what apache-avro writes.
#[test]
fn encoder_matches_apache_avro_on_map_free_events() {
    let codec = codec();
    for event in samples::all() {
        let kind = event.kind();
        let (_, schema) = codec.store().current(kind);
        let value = event.to_avro_value().unwrap().resolve(schema).unwrap();
        if format!("{value:?}").contains("Map(") {
            continue;
        }
        let theirs = apache_avro::to_avro_datum(schema, value).unwrap();
        assert_eq!(codec.encode(&event).unwrap()[10..], theirs[..], "{}", kind.name());
    }
}

/// The direct writer places every sample (none falls back to apache-avro's path, which is slower) and
/// writes the bytes that path writes.
#[test]
fn direct_writer_writes_every_sample_as_the_resolving_path_does() {
    let codec = codec();
    for event in samples::all() {
        let kind = event.kind();
        let mut direct = Vec::new();
        codec.write_direct(&event, &mut direct).unwrap_or_else(|e| panic!("{} refused: {e}", kind.name()));
        let mut resolved = Vec::new();
        write_resolved(&event, codec.store().current(kind).1, &mut resolved).unwrap();
        assert_eq!(direct, resolved, "{}", kind.name());
    }
}

/// What the direct writer cannot place exactly it refuses, so the caller takes the resolving path.
#[test]
fn direct_writer_refuses_what_it_cannot_place_exactly() {
    use super::datum::Plan;
    let long = Plan::Long;
    let mut out = Vec::new();
    assert!(writer::write(&1_i32, &long, &mut out).is_err(), "an int where the schema says long");
    assert!(writer::write(&1_u64, &long, &mut out).is_err(), "an unsigned integer");
    let two_strings = Plan::Union(vec![Plan::String, Plan::String]);
    assert!(writer::write("a", &two_strings, &mut out).is_err(), "an ambiguous union branch");
    let map = Plan::Map(Box::new(Plan::Long));
    let unsorted: Vec<(String, i64)> = vec![("b".into(), 1), ("a".into(), 2)];
    let unsorted = UnsortedMap(unsorted);
    assert!(writer::write(&unsorted, &map, &mut out).is_err(), "map keys out of order");
    let record = Plan::Record(vec![("a", Plan::Long), ("b", Plan::Long)]);
    assert!(writer::write(&OneField { a: 1 }, &record, &mut out).is_err(), "a missing field");
}

struct UnsortedMap(Vec<(String, i64)>);

impl serde::Serialize for UnsortedMap {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

#[derive(serde::Serialize)]
struct OneField {
    a: i64,
}

#[test]
fn encoding_is_deterministic() {
    let codec = codec();
    let event = samples::sample(EventKind::RunRequested);
    let first = codec.encode(&event).unwrap();
    for _ in 0..20 {
        assert_eq!(codec.encode(&event).unwrap(), first);
    }
}

#[test]
fn header_carries_the_little_endian_fingerprint_of_the_canonical_form() {
    let codec = codec();
    let event = samples::sample(EventKind::RunRequested);
    let bytes = codec.encode(&event).unwrap();
    let (fp, schema) = codec.store().current(EventKind::RunRequested);
    assert_eq!(fp, rabin::fingerprint(canonical_form(schema).as_bytes()));
    assert!(canonical_form(schema).contains(r#"{"name":"occurred_at","type":"long"}"#));
    assert_eq!(bytes[2..10], fp.to_le_bytes());
}

#[test]
fn confluent_framing_round_trips_and_needs_an_id() {
    let mut ids = ConfluentIds::default();
    ids.insert(EventKind::RunRequested, 42);
    let codec = Codec::with_store(SchemaStore::builtin().unwrap(), Encoding::Confluent(ids));
    let event = samples::sample(EventKind::RunRequested);
    let bytes = codec.encode(&event).unwrap();
    assert_eq!(bytes[..5], [0, 0, 0, 0, 42]);
    assert_eq!(codec.decode(&bytes).unwrap(), event);
    // A single-object message still decodes with a Confluent codec: the header says which it is.
    let single = Codec::new().unwrap().encode(&event).unwrap();
    assert_eq!(codec.decode(&single).unwrap(), event);
    let err = codec.encode(&samples::sample(EventKind::RunStarted)).unwrap_err();
    assert!(err.to_string().contains("no Confluent schema id"), "{err}");
}

#[test]
fn garbage_is_a_decode_error() {
    let codec = codec();
    for bytes in [&b""[..], b"\x00", b"hello world", b"\xC3\x01\x00\x00\x00\x00\x00\x00\x00\x00\x02"] {
        assert!(matches!(codec.decode(bytes), Err(Error::Decode(_))), "{bytes:?}");
    }
    let mut good = codec.encode(&samples::sample(EventKind::RunStarted)).unwrap();
    good.push(0);
    assert!(codec.decode(&good).unwrap_err().to_string().contains("trailing"));
}

const HEALTH_V2: &str = r#"{
  "type": "record", "name": "RegionHealthSampled", "namespace": "io.chaoseater.events",
  "fields": [
    {"name": "event_id", "type": "string"},
    {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
    {"name": "region", "type": "string"},
    {"name": "status", "type": {"type": "enum", "name": "HealthStatus", "symbols": ["HEALTHY", "DEGRADED", "FAILED"]}},
    {"name": "latency_ms", "type": ["null", "double"], "default": null},
    {"name": "http_status", "type": ["null", "int"], "default": null},
    {"name": "message", "type": ["null", "string"], "default": null},
    {"name": "probe_host", "type": ["null", "string"], "default": null}
  ]
}"#;

/// A newer writer added an optional field with a default: this (older) reader, told of the newer schema,
/// still reads its bytes and drops the field it does not know.
#[test]
fn old_reader_reads_bytes_of_a_schema_that_gained_an_optional_field() {
    let mut store = SchemaStore::builtin().unwrap();
    let (kind, fp) = store.add_writer_schema(HEALTH_V2, "health_v2").unwrap();
    assert_eq!(kind, EventKind::RegionHealthSampled);
    let codec = Codec::with_store(store, Encoding::SingleObject);

    let v2 = apache_avro::Schema::parse_str(HEALTH_V2).unwrap();
    let mut record = Record::new(&v2).unwrap();
    record.put("event_id", "e-1");
    record.put("occurred_at", Value::TimestampMillis(1_000));
    record.put("region", "eu");
    record.put("status", Value::Enum(0, "HEALTHY".into()));
    record.put("latency_ms", Value::Union(1, Box::new(Value::Double(2.5))));
    record.put("http_status", Value::Union(1, Box::new(Value::Int(200))));
    record.put("message", Value::Union(0, Box::new(Value::Null)));
    record.put("probe_host", Value::Union(1, Box::new(Value::String("p1".into()))));
    let mut bytes = SINGLE_OBJECT_MAGIC.to_vec();
    bytes.extend_from_slice(&fp.to_le_bytes());
    bytes.extend(apache_avro::to_avro_datum(&v2, record).unwrap());

    let decoded = codec.decode(&bytes).unwrap();
    assert_eq!(
        decoded,
        Event::RegionHealthSampled(RegionHealthSampled {
            event_id: EventId::new("e-1"),
            occurred_at: TimestampMs(1_000),
            region: RegionName::new("eu"),
            status: HealthStatus::Healthy,
            latency_ms: Some(2.5),
            http_status: Some(200),
            message: None,
            error_rate: None,
        })
    );
}

/// The reverse: a newer reader gets bytes of today's schema and fills the new field with its default.
#[test]
fn new_reader_reads_old_bytes_with_the_default() {
    let codec = codec();
    let event = samples::sample(EventKind::RegionHealthSampled);
    let bytes = codec.encode(&event).unwrap();
    let (_, v1) = codec.store().current(EventKind::RegionHealthSampled);
    let v2 = apache_avro::Schema::parse_str(HEALTH_V2).unwrap();
    let value = apache_avro::from_avro_datum(v1, &mut &bytes[10..], Some(&v2)).unwrap();
    let Value::Record(fields) = value else { panic!("not a record") };
    assert_eq!(fields.last().unwrap(), &("probe_host".to_owned(), Value::Union(0, Box::new(Value::Null))));
    assert_eq!(fields[2], ("region".to_owned(), Value::String("eu-west".into())));
}

#[test]
fn shipped_writer_schemas_load_from_the_directory() {
    let mut store = SchemaStore::builtin().unwrap();
    let dir = crate::package_dir!().join("avro");
    assert_eq!(store.add_writer_schemas_from_dir(&dir).unwrap(), EventKind::ALL.len());
}

fn health_strategy() -> impl Strategy<Value = RegionHealthSampled> {
    (
        "[a-z0-9-]{1,20}",
        any::<i64>(),
        prop_oneof![Just(HealthStatus::Healthy), Just(HealthStatus::Degraded), Just(HealthStatus::Failed)],
        proptest::option::of(any::<f64>().prop_filter("NaN never equals itself", |f| !f.is_nan())),
        proptest::option::of(any::<i32>()),
        proptest::option::of(".{0,40}"),
        proptest::option::of(0.0..=1.0f64),
    )
        .prop_map(|(region, at, status, latency_ms, http_status, message, error_rate)| RegionHealthSampled {
            event_id: EventId::derive("RegionHealthSampled", &[&region, &at.to_string()]),
            occurred_at: TimestampMs(at),
            region: RegionName::new(region),
            status,
            latency_ms,
            http_status,
            message,
            error_rate,
        })
}

fn param_strategy() -> impl Strategy<Value = crate::experiment::ParamValue> {
    use crate::experiment::ParamValue;
    prop_oneof![
        any::<bool>().prop_map(ParamValue::Bool),
        any::<i64>().prop_map(ParamValue::Int),
        (-1e12f64..1e12).prop_map(ParamValue::Float),
        ".{0,12}".prop_map(ParamValue::Text),
        proptest::collection::vec(".{0,8}", 0..4).prop_map(ParamValue::List),
    ]
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = codec().decode(&bytes);
    }

    /// Damaged messages (a byte changed, bytes cut or added): the direct reader accepts exactly what
    /// apache-avro accepts, with the same result.
    #[test]
    fn direct_reader_agrees_with_apache_avro_on_damaged_messages(
        kind in 0..EventKind::ALL.len(),
        at in any::<prop::sample::Index>(),
        byte in any::<u8>(),
        damage in 0..3u8,
    ) {
        let codec = codec();
        let mut bytes = codec.encode(&samples::sample(EventKind::ALL[kind])).unwrap();
        let i = 10 + at.index(bytes.len() - 10);
        match damage {
            0 => bytes[i] = byte,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, byte),
        }
        prop_assert!(readers_agree(&codec, &bytes).is_ok(), "{}", readers_agree(&codec, &bytes).unwrap_err());
    }

    /// Random datum bytes behind a valid header, the hardest case for a decoder: neither reader panics,
    /// and they agree.
    #[test]
    fn direct_reader_agrees_with_apache_avro_on_random_payloads(
        kind in 0..EventKind::ALL.len(),
        payload in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let codec = codec();
        let (fp, _) = codec.store().current(EventKind::ALL[kind]);
        let mut bytes = SINGLE_OBJECT_MAGIC.to_vec();
        bytes.extend_from_slice(&fp.to_le_bytes());
        bytes.extend(payload);
        prop_assert!(readers_agree(&codec, &bytes).is_ok(), "{}", readers_agree(&codec, &bytes).unwrap_err());
    }

    #[test]
    fn health_samples_round_trip(event in health_strategy()) {
        let codec = codec();
        let event = Event::RegionHealthSampled(event);
        prop_assert_eq!(codec.decode(&codec.encode(&event).unwrap()).unwrap(), event);
    }

    #[test]
    fn any_parameter_values_round_trip(params in proptest::collection::btree_map("[a-z_]{1,10}", param_strategy(), 0..6)) {
        let codec = codec();
        let Event::RunRequested(mut request) = samples::sample(EventKind::RunRequested) else { unreachable!() };
        request.experiment.parameters = params;
        let event = Event::RunRequested(request);
        prop_assert_eq!(codec.decode(&codec.encode(&event).unwrap()).unwrap(), event);
    }
}

/// Bytes an earlier version of a schema wrote stay readable: the shipped previous schema resolves them
/// into today's type (version 1 of AbTestRequested had no per-variant experiment, metrics or confidence).
#[test]
fn previous_versions_golden_bytes_decode_into_todays_types() {
    let codec = codec();
    let path = golden_dir().join("previous/ab_test_requested.v1.bin");
    let bytes = std::fs::read(&path).unwrap();
    let decoded = codec.decode(&bytes).unwrap();
    assert_eq!(decoded, Event::AbTestRequested(samples::ab_test_requested_v1()));
    let Event::AbTestRequested(request) = decoded else { unreachable!() };
    assert!((request.effective_confidence() - 0.95).abs() < 1e-12);
    assert_eq!(request.metric_specs().len(), 6);

    // RegionResult before score_version 2: its metrics had no latency objective, coverage or interval.
    let bytes = std::fs::read(golden_dir().join("previous/region_result.v1.bin")).unwrap();
    let decoded = codec.decode(&bytes).unwrap();
    assert_eq!(decoded, Event::RegionResult(samples::region_result_v1()));
    let Event::RegionResult(result) = decoded else { unreachable!() };
    assert_eq!(result.score_version, 1);
    assert_eq!(result.metrics.and_then(|m| m.slo_latency_ms), None);
}
