//! Avro codecs: single-object encoding by default, Confluent wire format as an option, and a decoder that
//! finds the writer schema from the bytes so that one topic can carry several event types.
//!
//! Single-object encoding (Avro spec): `C3 01`, the writer schema's 8-byte little-endian CRC-64-AVRO
//! fingerprint, then the datum. Confluent: `00`, a 4-byte big-endian schema id, then the datum. The decoder
//! accepts both, whatever this process writes.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Once};

use apache_avro::Schema;
use apache_avro::types::Value;

use crate::error::{Error, Result};
use crate::events::{Event, EventKind};
use crate::rabin;

mod datum;
mod writer;
use datum::{Input, Plan, Reader};

/// The two bytes that open every single-object-encoded message.
pub const SINGLE_OBJECT_MAGIC: [u8; 2] = [0xC3, 0x01];
/// The byte that opens a Confluent-framed message.
pub const CONFLUENT_MAGIC: u8 = 0;

/// Largest allocation the Avro decoder makes for one string, bytes or array: our events are small, and a
/// garbage length prefix must fail fast instead of reserving gigabytes.
const MAX_ALLOCATION_BYTES: usize = 16 * 1024 * 1024;

/// Earlier versions of our schemas, shipped so that the bytes their writers left on the topics still
/// decode (resolved into the current types). A schema that changes moves its old text here.
const PREVIOUS: &[(&str, &str)] = &[
    ("previous/ab_test_requested.v1.avsc", include_str!("../avro/previous/ab_test_requested.v1.avsc")),
    ("previous/region_result.v1.avsc", include_str!("../avro/previous/region_result.v1.avsc")),
];

/// One schema the store knows.
#[derive(Debug)]
struct Known {
    kind: EventKind,
    schema: Schema,
}

/// The schemas a process reads and writes: the shipped (current) schema of every event type, plus any
/// other writer schemas it was given (older or newer versions), keyed by fingerprint.
#[derive(Debug)]
pub struct SchemaStore {
    current: HashMap<EventKind, (u64, Schema)>,
    writers: HashMap<u64, Known>,
    /// The current schemas compiled for the direct reader, by fingerprint.
    plans: &'static HashMap<u64, Plan>,
}

impl SchemaStore {
    /// The store of the shipped schemas.
    pub fn builtin() -> Result<Self> {
        static LIMIT: Once = Once::new();
        LIMIT.call_once(|| {
            apache_avro::util::max_allocation_bytes(MAX_ALLOCATION_BYTES);
        });
        // Compiled once per process: plans keep their field names for the process's life (`datum::leak`),
        // and every codec built after the first shares them.
        static PLANS: std::sync::OnceLock<HashMap<u64, Plan>> = std::sync::OnceLock::new();
        let mut compiled = HashMap::new();
        let (mut current, mut writers) = (HashMap::new(), HashMap::new());
        for &kind in EventKind::ALL {
            let schema = parse(kind.schema_text(), kind.file_name())?;
            let fp = fingerprint(&schema)?;
            if PLANS.get().is_none()
                && let Some(plan) = Plan::compile(&schema)
            {
                compiled.insert(fp, plan);
            }
            writers.insert(fp, Known { kind, schema: schema.clone() });
            current.insert(kind, (fp, schema));
        }
        let mut store = SchemaStore { current, writers, plans: PLANS.get_or_init(|| compiled) };
        for (file, text) in PREVIOUS {
            store.add_writer_schema(text, file)?;
        }
        Ok(store)
    }

    /// Adds a writer schema (another version of one of our event types), so that bytes written with it
    /// decode and resolve into the current type. The event type is found by record name.
    pub fn add_writer_schema(&mut self, text: &str, origin: &str) -> Result<(EventKind, u64)> {
        let schema = parse(text, origin)?;
        let name = match &schema {
            Schema::Record(record) => record.name.name.clone(),
            _ => {
                return Err(Error::Invalid(format!("schema {origin}: top level must be a record")));
            }
        };
        let kind = EventKind::from_name(&name)
            .ok_or_else(|| Error::Invalid(format!("schema {origin}: {name} is not a ChaosEater event")))?;
        let fp = fingerprint(&schema)?;
        self.writers.insert(fp, Known { kind, schema });
        Ok((kind, fp))
    }

    /// Adds every `*.avsc` file of a directory as a writer schema.
    pub fn add_writer_schemas_from_dir(&mut self, dir: &Path) -> Result<usize> {
        let io = |source| Error::Io { path: dir.display().to_string(), source };
        let mut added = 0;
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|ext| ext == "avsc") {
                let text = std::fs::read_to_string(&path)
                    .map_err(|source| Error::Io { path: path.display().to_string(), source })?;
                self.add_writer_schema(&text, &path.display().to_string())?;
                added += 1;
            }
        }
        Ok(added)
    }

    /// The current schema of an event type and its fingerprint.
    pub fn current(&self, kind: EventKind) -> (u64, &Schema) {
        let (fp, schema) = &self.current[&kind];
        (*fp, schema)
    }
}

fn parse(text: &str, origin: &str) -> Result<Schema> {
    Schema::parse_str(text).map_err(|source| Error::Schema { origin: origin.to_owned(), source: Box::new(source) })
}

/// The Rabin fingerprint of a schema's Parsing Canonical Form.
pub fn fingerprint(schema: &Schema) -> Result<u64> {
    Ok(rabin::fingerprint(canonical_form(schema).as_bytes()))
}

/// The schema's Parsing Canonical Form, as the spec (and Java, fastavro) define it.
///
/// apache-avro 0.21 strips `logicalType` but then leaves `{"type":"long"}` where the spec's [PRIMITIVE]
/// rule asks for `"long"`, so every schema with a `timestamp-millis` field would get a fingerprint no other
/// Avro library computes. Such a one-key object can only come from that slip, so it is reduced here.
pub fn canonical_form(schema: &Schema) -> String {
    let mut form = schema.canonical_form();
    for primitive in ["null", "boolean", "int", "long", "float", "double", "bytes", "string"] {
        form = form.replace(&format!(r#"{{"type":"{primitive}"}}"#), &format!(r#""{primitive}""#));
    }
    form
}

/// Schema ids for the Confluent wire format, as a schema registry assigned them.
#[derive(Debug, Clone, Default)]
pub struct ConfluentIds {
    by_kind: HashMap<EventKind, u32>,
    by_id: HashMap<u32, EventKind>,
}

impl ConfluentIds {
    /// Records that the registry gave `kind`'s current schema the id `id`.
    pub fn insert(&mut self, kind: EventKind, id: u32) {
        self.by_kind.insert(kind, id);
        self.by_id.insert(id, kind);
    }
}

/// How this process frames what it writes.
#[derive(Debug, Clone, Default)]
pub enum Encoding {
    /// Avro single-object encoding: readable by any Avro library with the .avsc files alone.
    #[default]
    SingleObject,
    /// Confluent wire format, for shops that run a schema registry.
    Confluent(ConfluentIds),
}

/// Encodes and decodes events. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Codec {
    store: Arc<SchemaStore>,
    encoding: Encoding,
    confluent_ids: ConfluentIds,
}

impl Codec {
    /// A codec writing single-object encoding with the shipped schemas.
    pub fn new() -> Result<Self> {
        Ok(Self::with_store(SchemaStore::builtin()?, Encoding::SingleObject))
    }

    /// A codec over a schema store and an encoding.
    pub fn with_store(store: SchemaStore, encoding: Encoding) -> Self {
        let confluent_ids = match &encoding {
            Encoding::Confluent(ids) => ids.clone(),
            Encoding::SingleObject => ConfluentIds::default(),
        };
        Self { store: Arc::new(store), encoding, confluent_ids }
    }

    /// The schema store.
    pub fn store(&self) -> &SchemaStore {
        &self.store
    }

    /// Encodes an event with its current schema.
    pub fn encode(&self, event: &Event) -> Result<Vec<u8>> {
        let kind = event.kind();
        let (fp, schema) = self.store.current(kind);
        let mut out = Vec::with_capacity(256);
        match &self.encoding {
            Encoding::SingleObject => {
                out.extend_from_slice(&SINGLE_OBJECT_MAGIC);
                out.extend_from_slice(&fp.to_le_bytes());
            }
            Encoding::Confluent(ids) => {
                let id = ids
                    .by_kind
                    .get(&kind)
                    .ok_or_else(|| Error::Invalid(format!("no Confluent schema id registered for {}", kind.name())))?;
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
            }
        }
        let framing = out.len();
        if self.write_direct(event, &mut out).is_ok() {
            return Ok(out);
        }
        // What the direct writer cannot place goes through apache-avro's resolution (see `writer`).
        out.truncate(framing);
        write_resolved(event, schema, &mut out)?;
        Ok(out)
    }

    /// Appends the event's datum by the direct writer, if it can place every value.
    fn write_direct(&self, event: &Event, out: &mut Vec<u8>) -> std::result::Result<(), writer::Refused> {
        let (fp, _) = self.store.current(event.kind());
        let plan = self.store.plans.get(&fp).ok_or_else(|| writer::Refused("no plan for the schema".into()))?;
        writer::write(&event.body(), plan, out)
    }

    /// Decodes an event, finding its writer schema from the header and resolving it into the current type.
    ///
    /// Bytes written with the current schema (what this version writes) are read in one pass by the
    /// direct reader; other versions go through apache-avro's schema resolution.
    pub fn decode(&self, bytes: &[u8]) -> Result<Event> {
        let (kind, writer_fp, writer, body) = self.writer_of(bytes)?;
        if writer_fp == self.store.current(kind).0
            && let Some(plan) = self.store.plans.get(&writer_fp)
        {
            return decode_direct(kind, plan, body);
        }
        self.decode_resolved(kind, writer, body)
    }

    /// Decodes through apache-avro: the datum into a `Value` tree, resolved against the current schema.
    fn decode_resolved(&self, kind: EventKind, writer: &Schema, mut body: &[u8]) -> Result<Event> {
        let (_, reader) = self.store.current(kind);
        let value = apache_avro::from_avro_datum(writer, &mut body, Some(reader))
            .map_err(|e| Error::Decode(format!("{} payload: {e}", kind.name())))?;
        if !body.is_empty() {
            return Err(Error::Decode(format!("{} payload: {} trailing bytes", kind.name(), body.len())));
        }
        from_value(kind, &value)
    }

    /// Finds the writer schema named by the header; returns it and its fingerprint with the datum bytes.
    fn writer_of<'b>(&self, bytes: &'b [u8]) -> Result<(EventKind, u64, &Schema, &'b [u8])> {
        if bytes.len() >= 10 && bytes[..2] == SINGLE_OBJECT_MAGIC {
            let mut fp = [0u8; 8];
            fp.copy_from_slice(&bytes[2..10]);
            let fp = u64::from_le_bytes(fp);
            let known = self
                .store
                .writers
                .get(&fp)
                .ok_or_else(|| Error::Decode(format!("unknown schema fingerprint {fp:016x}")))?;
            return Ok((known.kind, fp, &known.schema, &bytes[10..]));
        }
        if bytes.len() >= 5 && bytes[0] == CONFLUENT_MAGIC {
            let id = u32::from_be_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
            let kind = *self
                .confluent_ids
                .by_id
                .get(&id)
                .ok_or_else(|| Error::Decode(format!("unknown Confluent schema id {id}")))?;
            let (fp, schema) = self.store.current(kind);
            return Ok((kind, fp, schema, &bytes[5..]));
        }
        Err(Error::Decode(format!(
            "not an Avro single-object or Confluent message (first bytes {:02x?})",
            &bytes[..bytes.len().min(4)]
        )))
    }
}

/// Appends the event's datum through apache-avro: a `Value` tree resolved against `schema`, then written.
fn write_resolved(event: &Event, schema: &Schema, out: &mut Vec<u8>) -> Result<()> {
    let kind = event.kind();
    let encode_err = |source| Error::Encode { kind: kind.name(), source: Box::new(source) };
    let value = event.to_avro_value().and_then(|v| v.resolve(schema)).map_err(encode_err)?;
    write_value(&value, out).map_err(|what| Error::Invalid(format!("cannot encode {}: {what}", kind.name())))
}

/// Writes a resolved Avro value in the binary encoding.
///
/// apache-avro writes map entries in its HashMap's (random) order, so the same event would give different
/// bytes from run to run. Here map keys are written sorted: one event, one byte string, which golden files
/// and byte-level deduplication rely on. Everything else is the spec's encoding, as apache-avro writes it
/// (the tests compare the two on map-free events).
fn write_value(value: &Value, out: &mut Vec<u8>) -> std::result::Result<(), String> {
    match value {
        Value::Null => {}
        Value::Boolean(b) => out.push(u8::from(*b)),
        Value::Int(v) | Value::Date(v) | Value::TimeMillis(v) => write_long(i64::from(*v), out),
        Value::Long(v)
        | Value::TimestampMillis(v)
        | Value::TimestampMicros(v)
        | Value::TimeMicros(v)
        | Value::LocalTimestampMillis(v)
        | Value::LocalTimestampMicros(v) => write_long(*v, out),
        Value::Float(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Double(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::String(s) => write_bytes(s.as_bytes(), out),
        Value::Bytes(b) => write_bytes(b, out),
        Value::Fixed(_, b) => out.extend_from_slice(b),
        Value::Enum(index, _) => write_long(i64::from(*index), out),
        Value::Union(index, inner) => {
            write_long(i64::from(*index), out);
            write_value(inner, out)?;
        }
        Value::Array(items) => {
            if !items.is_empty() {
                write_long(items.len() as i64, out);
                for item in items {
                    write_value(item, out)?;
                }
            }
            out.push(0);
        }
        Value::Map(entries) => {
            if !entries.is_empty() {
                write_long(entries.len() as i64, out);
                let mut keys: Vec<&String> = entries.keys().collect();
                keys.sort_unstable();
                for key in keys {
                    write_bytes(key.as_bytes(), out);
                    write_value(&entries[key], out)?;
                }
            }
            out.push(0);
        }
        Value::Record(fields) => {
            for (_, field) in fields {
                write_value(field, out)?;
            }
        }
        other => return Err(format!("unsupported value {other:?}")),
    }
    Ok(())
}

fn write_long(v: i64, out: &mut Vec<u8>) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

fn write_bytes(bytes: &[u8], out: &mut Vec<u8>) {
    write_long(bytes.len() as i64, out);
    out.extend_from_slice(bytes);
}

/// One pass from bytes to the typed event (see [`datum`]).
fn decode_direct(kind: EventKind, plan: &Plan, body: &[u8]) -> Result<Event> {
    let mut input = Input::new(body);
    let event = Event::deserialize_kind(kind, Reader { input: &mut input, plan })
        .map_err(|e| Error::Decode(format!("{} payload: {e}", kind.name())))?;
    if input.remaining() > 0 {
        return Err(Error::Decode(format!("{} payload: {} trailing bytes", kind.name(), input.remaining())));
    }
    Ok(event)
}

fn from_value(kind: EventKind, value: &Value) -> Result<Event> {
    Event::from_avro_value(kind, value).map_err(|e| Error::Decode(format!("{} fields: {e}", kind.name())))
}

#[cfg(test)]
mod tests;
