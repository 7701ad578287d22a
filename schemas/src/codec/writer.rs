//! A direct Avro binary writer for the shipped schemas: serde walks the typed event and each value is
//! written as it comes, following the plan compiled once from the current schema (see [`super::datum`]).
//!
//! apache-avro's path first builds a generic `Value` tree (a heap node per field), resolves it against
//! the schema (a HashMap lookup per record field), and only then writes: on the producer this was two
//! thirds of the time spent publishing an event. This writer does one pass.
//!
//! It places a value only where the plan names its kind exactly: an `i64` where the schema says `long`,
//! a unit variant where it says `enum`, a union branch chosen because it is the one branch of that
//! kind. Anything else (a promotion apache-avro's resolution would make, a union with two branches of
//! one kind, map keys that do not come sorted, fields in another order than the schema's) is refused,
//! and `Codec::encode` then takes apache-avro's path. So the bytes never depend on which path wrote them;
//! the tests check that every sample event takes this path and gets the same bytes from both.

use serde::Serialize;
use serde::ser::{self, Impossible};

use super::datum::Plan;
use super::{write_bytes, write_long};

/// Why the direct writer could not place a value; the caller falls back to apache-avro.
pub(crate) use super::datum::DatumError as Refused;

type Result<T> = std::result::Result<T, Refused>;

fn refuse<T>(what: impl Into<String>) -> Result<T> {
    Err(Refused(what.into()))
}

/// Writes `value` under `plan`, appending to `out`. On `Err`, `out` holds a partial datum: truncate it.
pub(crate) fn write<T: Serialize + ?Sized>(value: &T, plan: &Plan, out: &mut Vec<u8>) -> Result<()> {
    value.serialize(Writer { out, plan })
}

/// A value's kind, as a union branch is chosen by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Array,
    Map,
    Record,
    Enum,
}

impl Kind {
    fn of(plan: &Plan) -> Option<Kind> {
        Some(match plan {
            Plan::Null => Kind::Null,
            Plan::Boolean => Kind::Boolean,
            Plan::Int => Kind::Int,
            Plan::Long => Kind::Long,
            Plan::Float => Kind::Float,
            Plan::Double => Kind::Double,
            Plan::Bytes => Kind::Bytes,
            Plan::String => Kind::String,
            Plan::Array(_) => Kind::Array,
            Plan::Map(_) => Kind::Map,
            Plan::Record(_) => Kind::Record,
            Plan::Enum(_) => Kind::Enum,
            Plan::Union(_) | Plan::Fixed(_) => return None,
        })
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    plan: &'a Plan,
}

impl<'a> Writer<'a> {
    /// The plan a value of `kind` is written under: the plan itself if it is of that kind, or in a
    /// union, the one branch of that kind (its index written first).
    fn place(&mut self, kind: Kind) -> Result<&'a Plan> {
        let plan = self.plan;
        if let Plan::Union(branches) = plan {
            let mut matching = branches.iter().enumerate().filter(|(_, b)| Kind::of(b) == Some(kind));
            return match (matching.next(), matching.next()) {
                (Some((index, branch)), None) => {
                    write_long(index as i64, self.out);
                    Ok(branch)
                }
                (None, _) => refuse(format!("no {kind:?} branch in the union")),
                (Some(_), Some(_)) => refuse(format!("two {kind:?} branches in the union")),
            };
        }
        match Kind::of(plan) {
            Some(k) if k == kind => Ok(plan),
            _ => refuse(format!("a {kind:?} where the schema has {plan:?}")),
        }
    }

    fn at(out: &'a mut Vec<u8>, plan: &'a Plan) -> Self {
        Writer { out, plan }
    }
}

impl<'a> ser::Serializer for Writer<'a> {
    type Ok = ();
    type Error = Refused;
    type SerializeSeq = Block<'a>;
    type SerializeTuple = Impossible<(), Refused>;
    type SerializeTupleStruct = Impossible<(), Refused>;
    type SerializeTupleVariant = Impossible<(), Refused>;
    type SerializeMap = Entries<'a>;
    type SerializeStruct = Fields<'a>;
    type SerializeStructVariant = Impossible<(), Refused>;

    fn serialize_bool(mut self, v: bool) -> Result<()> {
        self.place(Kind::Boolean)?;
        self.out.push(u8::from(v));
        Ok(())
    }

    fn serialize_i8(self, v: i8) -> Result<()> {
        self.serialize_i32(i32::from(v))
    }

    fn serialize_i16(self, v: i16) -> Result<()> {
        self.serialize_i32(i32::from(v))
    }

    fn serialize_i32(mut self, v: i32) -> Result<()> {
        self.place(Kind::Int)?;
        write_long(i64::from(v), self.out);
        Ok(())
    }

    fn serialize_i64(mut self, v: i64) -> Result<()> {
        self.place(Kind::Long)?;
        write_long(v, self.out);
        Ok(())
    }

    fn serialize_u8(self, _: u8) -> Result<()> {
        refuse("unsigned integer")
    }

    fn serialize_u16(self, _: u16) -> Result<()> {
        refuse("unsigned integer")
    }

    fn serialize_u32(self, _: u32) -> Result<()> {
        refuse("unsigned integer")
    }

    fn serialize_u64(self, _: u64) -> Result<()> {
        refuse("unsigned integer")
    }

    fn serialize_f32(mut self, v: f32) -> Result<()> {
        self.place(Kind::Float)?;
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_f64(mut self, v: f64) -> Result<()> {
        self.place(Kind::Double)?;
        self.out.extend_from_slice(&v.to_le_bytes());
        Ok(())
    }

    fn serialize_char(self, _: char) -> Result<()> {
        refuse("char")
    }

    fn serialize_str(mut self, v: &str) -> Result<()> {
        self.place(Kind::String)?;
        write_bytes(v.as_bytes(), self.out);
        Ok(())
    }

    fn serialize_bytes(mut self, v: &[u8]) -> Result<()> {
        self.place(Kind::Bytes)?;
        write_bytes(v, self.out);
        Ok(())
    }

    fn serialize_none(mut self) -> Result<()> {
        if !matches!(self.plan, Plan::Union(_)) {
            return refuse("None outside a union");
        }
        self.place(Kind::Null).map(drop)
    }

    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<()> {
        if !matches!(self.plan, Plan::Union(_)) {
            return refuse("Some outside a union");
        }
        // The inner value chooses its branch by its own kind.
        value.serialize(self)
    }

    fn serialize_unit(mut self) -> Result<()> {
        self.place(Kind::Null).map(drop)
    }

    fn serialize_unit_struct(self, _name: &'static str) -> Result<()> {
        self.serialize_unit()
    }

    fn serialize_unit_variant(mut self, _name: &'static str, _index: u32, variant: &'static str) -> Result<()> {
        let Plan::Enum(symbols) = self.place(Kind::Enum)? else { unreachable!("place returned an enum plan") };
        match symbols.iter().position(|s| *s == variant) {
            Some(index) => {
                write_long(index as i64, self.out);
                Ok(())
            }
            None => refuse(format!("symbol {variant} is not in the enum")),
        }
    }

    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _name: &'static str, value: &T) -> Result<()> {
        value.serialize(self)
    }

    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<()> {
        refuse("newtype variant")
    }

    fn serialize_seq(mut self, len: Option<usize>) -> Result<Block<'a>> {
        let Plan::Array(item) = self.place(Kind::Array)? else { unreachable!("place returned an array plan") };
        let Some(len) = len else { return refuse("a sequence of unknown length") };
        Ok(Block::start(self.out, item, len))
    }

    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple> {
        refuse("tuple")
    }

    fn serialize_tuple_struct(self, _name: &'static str, _len: usize) -> Result<Self::SerializeTupleStruct> {
        refuse("tuple struct")
    }

    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant> {
        refuse("tuple variant")
    }

    fn serialize_map(mut self, len: Option<usize>) -> Result<Entries<'a>> {
        let Plan::Map(value) = self.place(Kind::Map)? else { unreachable!("place returned a map plan") };
        let Some(len) = len else { return refuse("a map of unknown length") };
        Ok(Entries { block: Block::start(self.out, value, len), last_key: None })
    }

    fn serialize_struct(mut self, _name: &'static str, _len: usize) -> Result<Fields<'a>> {
        let Plan::Record(fields) = self.place(Kind::Record)? else { unreachable!("place returned a record plan") };
        Ok(Fields { out: self.out, fields, next: 0 })
    }

    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant> {
        refuse("struct variant")
    }
}

/// An array's or map's one block: its count (when not empty), its items, then the closing 0, as
/// `write_value` writes them.
struct Block<'a> {
    out: &'a mut Vec<u8>,
    item: &'a Plan,
    expected: usize,
    written: usize,
}

impl<'a> Block<'a> {
    fn start(out: &'a mut Vec<u8>, item: &'a Plan, len: usize) -> Self {
        if len > 0 {
            write_long(len as i64, out);
        }
        Block { out, item, expected: len, written: 0 }
    }

    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.written += 1;
        value.serialize(Writer::at(self.out, self.item))
    }

    fn end(self) -> Result<()> {
        if self.written != self.expected {
            return refuse(format!("{} items where the length said {}", self.written, self.expected));
        }
        self.out.push(0);
        Ok(())
    }
}

impl ser::SerializeSeq for Block<'_> {
    type Ok = ();
    type Error = Refused;

    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.item(value)
    }

    fn end(self) -> Result<()> {
        Block::end(self)
    }
}

/// A map's entries. Keys must come in strictly increasing order (a `BTreeMap`'s), since the codec writes
/// map keys sorted; others are refused and take the sorting path.
struct Entries<'a> {
    block: Block<'a>,
    last_key: Option<String>,
}

impl ser::SerializeMap for Entries<'_> {
    type Ok = ();
    type Error = Refused;

    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<()> {
        // Map keys are rare (metadata, parameters, tags): the JSON detour keeps this short.
        let key = match serde_json::to_value(key) {
            Ok(serde_json::Value::String(key)) => key,
            _ => return refuse("a map key that is not a string"),
        };
        if self.last_key.as_ref().is_some_and(|last| *last >= key) {
            return refuse("map keys not in sorted order");
        }
        write_bytes(key.as_bytes(), self.block.out);
        self.last_key = Some(key);
        Ok(())
    }

    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<()> {
        self.block.item(value)
    }

    fn end(self) -> Result<()> {
        self.block.end()
    }
}

/// A record's fields, which must come in the schema's order, every one of them.
struct Fields<'a> {
    out: &'a mut Vec<u8>,
    fields: &'a [(&'static str, Plan)],
    next: usize,
}

impl ser::SerializeStruct for Fields<'_> {
    type Ok = ();
    type Error = Refused;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<()> {
        let Some((name, plan)) = self.fields.get(self.next) else {
            return refuse(format!("field {key} is not in the schema"));
        };
        if *name != key {
            return refuse(format!("field {key} where the schema has {name}"));
        }
        self.next += 1;
        value.serialize(Writer::at(self.out, plan))
    }

    fn skip_field(&mut self, key: &'static str) -> Result<()> {
        refuse(format!("skipped field {key}"))
    }

    fn end(self) -> Result<()> {
        match self.fields.get(self.next) {
            Some((name, _)) => refuse(format!("field {name} was not written")),
            None => Ok(()),
        }
    }
}
