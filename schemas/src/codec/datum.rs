//! A direct Avro binary reader for the shipped schemas: serde builds the typed event straight from the
//! bytes, walking a plan compiled once from the schema.
//!
//! apache-avro's reader first builds a generic `Value` tree (a heap node per field, a HashMap per record
//! lookup), resolves it against the reader schema, and only then lets serde build the event: three passes
//! and dozens of allocations for one RegionResult. When the writer schema *is* the current one (every
//! message this version writes) there is nothing to resolve, so this reader does one pass. Bytes written
//! with another schema version still go through apache-avro's resolution (see `Codec::decode`).
//!
//! It accepts exactly what the spec allows and checks what apache-avro checks: lengths within the input,
//! UTF-8 strings, enum and union indexes in range, varints of at most ten bytes. One difference: a message
//! cut off in a union index, a string or a boolean is refused here, where apache-avro reads the missing
//! value as null and may hand back an event with made-up nulls.

use std::collections::HashMap;
use std::fmt;

use apache_avro::Schema;
use serde::de::{self, Deserialize, DeserializeSeed, IntoDeserializer, Visitor};

/// A schema compiled for reading: named types resolved, nothing left to look up while decoding.
#[derive(Debug, Clone)]
pub(crate) enum Plan {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array(Box<Plan>),
    Map(Box<Plan>),
    Union(Vec<Plan>),
    Record(Vec<(&'static str, Plan)>),
    Enum(Vec<&'static str>),
    Fixed(usize),
}

impl Plan {
    /// Whether every value of this plan takes at least one byte.
    fn takes_bytes(&self) -> bool {
        match self {
            Plan::Null => false,
            Plan::Record(fields) => fields.iter().any(|(_, p)| p.takes_bytes()),
            Plan::Fixed(n) => *n > 0,
            _ => true,
        }
    }

    /// Compiles a schema; None for what this reader does not handle (recursive types, decimals,
    /// durations), which then decode through apache-avro.
    pub(crate) fn compile(schema: &Schema) -> Option<Plan> {
        compile(schema, None, &mut HashMap::new())
    }
}

/// Field names and enum symbols live as long as the process (a few hundred bytes per schema, compiled
/// once), so serde can borrow them as `&'static str`.
fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

fn compile(schema: &Schema, namespace: Option<&str>, named: &mut HashMap<String, Plan>) -> Option<Plan> {
    Some(match schema {
        Schema::Null => Plan::Null,
        Schema::Boolean => Plan::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Plan::Int,
        Schema::Long
        | Schema::TimeMicros
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimestampNanos
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros
        | Schema::LocalTimestampNanos => Plan::Long,
        Schema::Float => Plan::Float,
        Schema::Double => Plan::Double,
        Schema::Bytes => Plan::Bytes,
        Schema::String => Plan::String,
        Schema::Array(array) => Plan::Array(Box::new(compile(&array.items, namespace, named)?)),
        Schema::Map(map) => Plan::Map(Box::new(compile(&map.types, namespace, named)?)),
        Schema::Union(union) => {
            Plan::Union(union.variants().iter().map(|v| compile(v, namespace, named)).collect::<Option<_>>()?)
        }
        Schema::Record(record) => {
            let fullname = record.name.fullname(namespace.map(str::to_owned));
            let inner = record.name.namespace.as_deref().or(namespace);
            // A field naming its own record (a recursive type) finds no plan yet and gives up below.
            let fields = record
                .fields
                .iter()
                .map(|f| Some((leak(&f.name), compile(&f.schema, inner, named)?)))
                .collect::<Option<Vec<_>>>()?;
            let plan = Plan::Record(fields);
            named.insert(fullname, plan.clone());
            plan
        }
        Schema::Enum(e) => {
            let plan = Plan::Enum(e.symbols.iter().map(|s| leak(s)).collect());
            named.insert(e.name.fullname(namespace.map(str::to_owned)), plan.clone());
            plan
        }
        Schema::Fixed(f) => {
            let plan = Plan::Fixed(f.size);
            named.insert(f.name.fullname(namespace.map(str::to_owned)), plan.clone());
            plan
        }
        Schema::Ref { name } => named.get(&name.fullname(namespace.map(str::to_owned)))?.clone(),
        // apache-avro checks these beyond their bytes (a UUID's text or its 16 bytes): left to it.
        Schema::Uuid | Schema::Decimal(_) | Schema::BigDecimal | Schema::Duration => return None,
    })
}

/// Most items of a zero-byte type (null, an empty record) one block may hold.
const MAX_EMPTY_ITEMS: usize = 1 << 16;

/// Longest string or bytes, and most items in a block: apache-avro's limit as the codec sets it, so that
/// both readers refuse the same oversized values.
const MAX_LENGTH: usize = super::MAX_ALLOCATION_BYTES;

/// Why bytes did not decode, or (for the direct writer) why a value could not be placed.
#[derive(Debug)]
pub(crate) struct DatumError(pub(crate) String);

impl fmt::Display for DatumError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for DatumError {}

impl de::Error for DatumError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DatumError(msg.to_string())
    }
}

impl serde::ser::Error for DatumError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        DatumError(msg.to_string())
    }
}

type Result<T> = std::result::Result<T, DatumError>;

fn fail<T>(what: impl Into<String>) -> Result<T> {
    Err(DatumError(what.into()))
}

/// The bytes still to read.
pub(crate) struct Input<'de> {
    bytes: &'de [u8],
}

impl<'de> Input<'de> {
    pub(crate) fn new(bytes: &'de [u8]) -> Self {
        Self { bytes }
    }

    pub(crate) fn remaining(&self) -> usize {
        self.bytes.len()
    }

    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.bytes.len() {
            return fail(format!("needs {n} bytes, {} left", self.bytes.len()));
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    /// A zig-zag varint (Avro int and long).
    fn long(&mut self) -> Result<i64> {
        let mut z: u64 = 0;
        for i in 0..10 {
            let Some((&b, rest)) = self.bytes.split_first() else {
                return fail("input ends inside a number");
            };
            self.bytes = rest;
            z |= u64::from(b & 0x7F) << (7 * i);
            if b & 0x80 == 0 {
                return Ok((z >> 1) as i64 ^ -((z & 1) as i64));
            }
        }
        fail("number longer than ten bytes")
    }

    fn int(&mut self) -> Result<i32> {
        let v = self.long()?;
        i32::try_from(v).or_else(|_| fail(format!("int out of range: {v}")))
    }

    /// A length prefix, checked against what is left (a garbage length must not reserve memory).
    fn len(&mut self) -> Result<usize> {
        let n = self.long()?;
        match usize::try_from(n) {
            Ok(n) if n <= self.bytes.len() && n <= MAX_LENGTH => Ok(n),
            _ => fail(format!("length {n} with {} bytes left", self.bytes.len())),
        }
    }

    fn bytes(&mut self) -> Result<&'de [u8]> {
        let n = self.len()?;
        self.take(n)
    }

    fn str(&mut self) -> Result<&'de str> {
        std::str::from_utf8(self.bytes()?).or_else(|e| fail(format!("string is not UTF-8: {e}")))
    }

    /// The item count of the next block of an array or map; a negative count is followed by the block's
    /// size in bytes, which a reader may skip. Items that take bytes cannot outnumber the bytes left, so
    /// a garbage count fails here rather than after reserving memory for it.
    fn block(&mut self, item: &Plan) -> Result<usize> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        let n = n.unsigned_abs();
        let limit = if item.takes_bytes() { self.bytes.len().min(MAX_LENGTH) } else { MAX_EMPTY_ITEMS };
        match usize::try_from(n) {
            Ok(n) if n <= limit => Ok(n),
            _ => fail(format!("block of {n} items with {} bytes left", self.bytes.len())),
        }
    }
}

/// Reads one value of `plan` from `input`.
pub(crate) struct Reader<'a, 'de> {
    pub(crate) input: &'a mut Input<'de>,
    pub(crate) plan: &'a Plan,
}

impl<'a, 'de> Reader<'a, 'de> {
    fn at(input: &'a mut Input<'de>, plan: &'a Plan) -> Self {
        Self { input, plan }
    }

    /// The branch a union value takes.
    fn branch(input: &mut Input<'de>, branches: &'a [Plan]) -> Result<&'a Plan> {
        let index = input.long()?;
        usize::try_from(index)
            .ok()
            .and_then(|i| branches.get(i))
            .ok_or_else(|| DatumError(format!("union index {index} out of range ({} branches)", branches.len())))
    }
}

impl<'de> de::Deserializer<'de> for Reader<'_, 'de> {
    type Error = DatumError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.plan {
            Plan::Null => visitor.visit_unit(),
            Plan::Boolean => match self.input.take(1)?[0] {
                0 => visitor.visit_bool(false),
                1 => visitor.visit_bool(true),
                b => fail(format!("boolean byte {b}")),
            },
            Plan::Int => visitor.visit_i32(self.input.int()?),
            Plan::Long => visitor.visit_i64(self.input.long()?),
            Plan::Float => {
                let b = self.input.take(4)?;
                visitor.visit_f32(f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            Plan::Double => {
                let mut b = [0u8; 8];
                b.copy_from_slice(self.input.take(8)?);
                visitor.visit_f64(f64::from_le_bytes(b))
            }
            Plan::Bytes => visitor.visit_borrowed_bytes(self.input.bytes()?),
            Plan::Fixed(n) => visitor.visit_borrowed_bytes(self.input.take(*n)?),
            Plan::String => visitor.visit_borrowed_str(self.input.str()?),
            Plan::Enum(symbols) => visitor.visit_borrowed_str(symbol(self.input, symbols)?),
            Plan::Union(branches) => match Self::branch(self.input, branches)? {
                Plan::Null => visitor.visit_none(),
                plan => Reader::at(self.input, plan).deserialize_any(visitor),
            },
            Plan::Array(items) => {
                let mut seq = Items { input: self.input, plan: items, blocks: Blocks::default() };
                let value = visitor.visit_seq(&mut seq)?;
                seq.finish()?;
                Ok(value)
            }
            Plan::Map(values) => {
                let mut map = Entries { input: self.input, plan: values, blocks: Blocks::default() };
                let value = visitor.visit_map(&mut map)?;
                map.finish()?;
                Ok(value)
            }
            Plan::Record(fields) => {
                let mut record = Fields { input: self.input, fields: fields.iter() };
                let value = visitor.visit_map(&mut record)?;
                // Fields serde did not ask for (none with our types) must still be read past.
                for (_, plan) in record.fields.by_ref() {
                    de::IgnoredAny::deserialize(Reader::at(record.input, plan))?;
                }
                Ok(value)
            }
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.plan {
            Plan::Union(branches) => match Self::branch(self.input, branches)? {
                Plan::Null => visitor.visit_none(),
                plan => visitor.visit_some(Reader::at(self.input, plan)),
            },
            Plan::Null => visitor.visit_none(),
            other => fail(format!("an optional value needs a union with null, not {other:?}")),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        match self.plan {
            Plan::Enum(symbols) => visitor.visit_enum(symbol(self.input, symbols)?.into_deserializer()),
            Plan::String => visitor.visit_enum(self.input.str()?.into_deserializer()),
            Plan::Union(branches) => {
                let plan = Self::branch(self.input, branches)?;
                Reader::at(self.input, plan).deserialize_enum(name, variants, visitor)
            }
            other => fail(format!("{name}: an enum cannot be read from {other:?}")),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value> {
        visitor.visit_newtype_struct(self)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct seq tuple tuple_struct map struct identifier ignored_any
    }
}

fn symbol(input: &mut Input<'_>, symbols: &[&'static str]) -> Result<&'static str> {
    let index = input.long()?;
    usize::try_from(index)
        .ok()
        .and_then(|i| symbols.get(i).copied())
        .ok_or_else(|| DatumError(format!("enum index {index} out of range ({} symbols)", symbols.len())))
}

/// A record's fields, by name, in schema order.
struct Fields<'a, 'de> {
    input: &'a mut Input<'de>,
    fields: std::slice::Iter<'a, (&'static str, Plan)>,
}

impl<'de> de::MapAccess<'de> for &mut Fields<'_, 'de> {
    type Error = DatumError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        match self.fields.as_slice().first() {
            Some((name, _)) => seed.deserialize(de::value::BorrowedStrDeserializer::new(name)).map(Some),
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let (_, plan) = self.fields.next().ok_or_else(|| DatumError("value asked past the last field".into()))?;
        seed.deserialize(Reader::at(self.input, plan))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len())
    }
}

/// Where a reader is in an array's or map's blocks.
#[derive(Default)]
struct Blocks {
    left: usize,
    done: bool,
}

impl Blocks {
    /// Moves to the next item; false at the end. `item` bounds a block's count by the bytes left.
    fn next(&mut self, input: &mut Input<'_>, item: &Plan) -> Result<bool> {
        while self.left == 0 {
            if self.done {
                return Ok(false);
            }
            self.left = input.block(item)?;
            self.done = self.left == 0;
        }
        self.left -= 1;
        Ok(true)
    }
}

/// An array's items.
struct Items<'a, 'de> {
    input: &'a mut Input<'de>,
    plan: &'a Plan,
    blocks: Blocks,
}

impl Items<'_, '_> {
    /// Reads past items the visitor left.
    fn finish(&mut self) -> Result<()> {
        while self.blocks.next(self.input, self.plan)? {
            de::IgnoredAny::deserialize(Reader::at(self.input, self.plan))?;
        }
        Ok(())
    }
}

impl<'de> de::SeqAccess<'de> for &mut Items<'_, 'de> {
    type Error = DatumError;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.blocks.next(self.input, self.plan)? {
            return Ok(None);
        }
        seed.deserialize(Reader::at(self.input, self.plan)).map(Some)
    }
}

/// A map's entries; keys are strings.
struct Entries<'a, 'de> {
    input: &'a mut Input<'de>,
    plan: &'a Plan,
    blocks: Blocks,
}

impl Entries<'_, '_> {
    /// Reads past entries the visitor left.
    fn finish(&mut self) -> Result<()> {
        while self.blocks.next(self.input, &Plan::String)? {
            self.input.str()?;
            de::IgnoredAny::deserialize(Reader::at(self.input, self.plan))?;
        }
        Ok(())
    }
}

impl<'de> de::MapAccess<'de> for &mut Entries<'_, 'de> {
    type Error = DatumError;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        // Every entry starts with its key, so a block's count is bounded as for strings.
        if !self.blocks.next(self.input, &Plan::String)? {
            return Ok(None);
        }
        let key = self.input.str()?;
        seed.deserialize(de::value::BorrowedStrDeserializer::new(key)).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        seed.deserialize(Reader::at(self.input, self.plan))
    }
}
