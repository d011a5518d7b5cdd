//! An upper bound of the YAML size of a value, without writing the YAML: what splitting a zone
//! into parts needs for every rule, at a small fraction of the cost of serializing it.
//!
//! The bound follows the block layout serde_yaml_ng emits (two-space indentation, sequences
//! not indented under their key, no line folding, UTF-8 kept as is): per scalar line, the
//! indentation, the key and `: `, the scalar and the newline; per nested collection, its key
//! line. A string is counted as if it were quoted, with every quote or backslash escaped and
//! every control character escaped in the longest form (`\UXXXXXXXX`), unless it is plainly
//! safe unquoted; a string with a line break is counted as a literal block or as a quoted
//! scalar, whichever is longer. So the bound is never below the real size, and for rules a few
//! percent above it (tested against real serialization below).

use serde::ser::{self, Serialize};

/// Serialization shapes the bound does not model (never produced by ZonePolicy types): the
/// caller serializes for real instead.
#[derive(Debug)]
pub struct Unsupported;

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("value shape not modelled by the YAML size bound")
    }
}

impl std::error::Error for Unsupported {}

impl ser::Error for Unsupported {
    fn custom<T: std::fmt::Display>(_message: T) -> Self {
        Unsupported
    }
}

/// Upper bound of the bytes `value` takes as a top-level YAML document (without `---`).
pub fn yaml_bound<T: Serialize + ?Sized>(value: &T) -> Result<usize, Unsupported> {
    let mut bytes = 0;
    value.serialize(Bound {
        bytes: &mut bytes,
        place: Place::Top,
        lower: false,
    })?;
    Ok(bytes)
}

/// Lower bound of the same: every string counted as written plain (quoting and escapes
/// only add), every float as one digit. The layout is counted exactly in both.
pub fn yaml_lower_bound<T: Serialize + ?Sized>(value: &T) -> Result<usize, Unsupported> {
    let mut bytes = 0;
    value.serialize(Bound {
        bytes: &mut bytes,
        place: Place::Top,
        lower: true,
    })?;
    Ok(bytes)
}

/// Upper bound of the bytes `value` takes as an item of a block sequence whose `- ` is at
/// column `indent` (the rules of `spec.egress` are at column 2).
pub fn yaml_item_bound<T: Serialize + ?Sized>(
    value: &T,
    indent: usize,
) -> Result<usize, Unsupported> {
    let mut bytes = 0;
    value.serialize(Bound {
        bytes: &mut bytes,
        place: Place::Item { indent: indent + 2 },
        lower: false,
    })?;
    Ok(bytes)
}

/// Where a value sits, which decides what its first line costs.
#[derive(Clone, Copy, Debug)]
enum Place {
    /// The document itself: no indentation.
    Top,
    /// After `key:` on a line; `line` is the bytes up to and including the colon and `indent`
    /// the key's column.
    Value { line: usize, indent: usize },
    /// A sequence item whose content starts at column `indent` (after `- `).
    Item { indent: usize },
}

impl Place {
    /// Column of the entries of a mapping (or items' `- ` of a sequence) placed here.
    fn child_indent(self) -> usize {
        match self {
            Place::Top => 0,
            Place::Value { indent, .. } => indent + 2,
            Place::Item { indent } => indent,
        }
    }

    /// Column of a sequence's `- ` placed here: not indented under a key.
    fn sequence_indent(self) -> usize {
        match self {
            Place::Top => 0,
            Place::Value { indent, .. } => indent,
            Place::Item { indent } => indent,
        }
    }

    /// Bytes of one scalar of `width` bytes placed here, newline included.
    fn scalar_line(self, width: usize) -> usize {
        match self {
            Place::Top => width + 1,
            Place::Value { line, .. } => line + 1 + width + 1,
            // The `- ` is inside `indent`.
            Place::Item { indent } => indent + width + 1,
        }
    }

    /// Bytes of the line that opens a non-empty collection placed here (`key:\n`), or of an
    /// empty one (`key: {}\n`).
    fn opening(self, empty: bool) -> usize {
        match (self, empty) {
            (_, true) => self.scalar_line(2),
            (Place::Value { line, .. }, false) => line + 1,
            // A top-level collection or an item's first entry shares its first line.
            (Place::Top | Place::Item { .. }, false) => 0,
        }
    }
}

/// True when serde_yaml_ng writes `text` plain: letters, digits and `-_./:@`, starting with a
/// letter or digit, and not a word YAML reads as a boolean, null or number (`0x1f`, `0123`).
fn plain(text: &str) -> bool {
    let bytes = text.as_bytes();
    let Some(&first) = bytes.first() else {
        return false;
    };
    if !first.is_ascii_alphanumeric() {
        return false;
    }
    // One pass: every byte allowed, and whether the text could read as a number (digits and
    // `_` only: an integer; digits and `._eE+-`: maybe a float).
    let mut integer = true;
    let mut numeric = true;
    for &byte in bytes {
        if byte.is_ascii_digit() {
            continue;
        }
        integer &= byte == b'_';
        numeric &= matches!(byte, b'.' | b'_' | b'e' | b'E' | b'+' | b'-');
        if !(byte.is_ascii_alphanumeric()
            || matches!(byte, b'-' | b'_' | b'.' | b'/' | b':' | b'@'))
        {
            return false;
        }
    }
    if first.is_ascii_digit() {
        // `0x1f`, `0o17`, `0b1` and plain integers read as numbers.
        let prefixed = bytes.len() > 1 && first == b'0' && bytes[1].is_ascii_alphabetic();
        return !(integer || prefixed || numeric && text.parse::<f64>().is_ok());
    }
    // Starting with a letter, only these words read as booleans, null or numbers.
    const WORDS: [&str; 12] = [
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "inf", "nan", "infinity",
    ];
    bytes.len() > 8 || !WORDS.iter().any(|word| text.eq_ignore_ascii_case(word))
}

/// Bound of a scalar string's width on its line, and of the extra lines a literal block
/// (`|-`) of a multi-line string adds at `indent`.
fn string_bound(text: &str, indent: usize) -> usize {
    if plain(text) {
        return text.len();
    }
    let mut quoted = text.len() + 2;
    for c in text.chars() {
        if matches!(c, '\'' | '"' | '\\') {
            quoted += 1;
        } else if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{85}' | '\u{feff}') {
            // `\UXXXXXXXX` at most, for a character of at least one byte.
            quoted += 10;
        }
    }
    if text.contains('\n') {
        // `|-` (with an indentation indicator, `|2-`) and each line on its own, indented.
        let lines = text.split('\n').count();
        let literal = 4 + text.len() + lines * (indent + 4);
        quoted.max(literal)
    } else {
        quoted
    }
}

fn digits(mut value: u128) -> usize {
    let mut count = 1;
    while value >= 10 {
        value /= 10;
        count += 1;
    }
    count
}

struct Bound<'a> {
    bytes: &'a mut usize,
    place: Place,
    /// Counting the lower bound instead of the upper one.
    lower: bool,
}

/// A string's width on its line: bounded above (see [`string_bound`]) or below (its length).
fn width(text: &str, indent: usize, lower: bool) -> usize {
    if lower {
        text.len()
    } else {
        string_bound(text, indent)
    }
}

impl<'a> Bound<'a> {
    fn scalar(self, width: usize) -> Result<(), Unsupported> {
        *self.bytes += self.place.scalar_line(width);
        Ok(())
    }

    fn collection(self) -> Collection<'a> {
        Collection {
            bytes: self.bytes,
            place: self.place,
            lower: self.lower,
            entries: 0,
            key_line: 0,
        }
    }
}

/// A mapping or sequence being counted: its entries add their own lines; the opening line is
/// added at the end, when it is known whether the collection is empty.
struct Collection<'a> {
    bytes: &'a mut usize,
    place: Place,
    lower: bool,
    entries: usize,
    /// For mappings with non-string keys serialized through `serialize_key`: the pending key.
    key_line: usize,
}

impl Collection<'_> {
    fn item<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.entries += 1;
        let indent = self.place.sequence_indent() + 2;
        value.serialize(Bound {
            bytes: self.bytes,
            place: Place::Item { indent },
            lower: self.lower,
        })
    }

    fn entry<T: Serialize + ?Sized>(
        &mut self,
        key_width: usize,
        value: &T,
    ) -> Result<(), Unsupported> {
        self.entries += 1;
        let indent = self.place.child_indent();
        value.serialize(Bound {
            bytes: self.bytes,
            place: Place::Value {
                line: indent + key_width + 1,
                indent,
            },
            lower: self.lower,
        })
    }

    fn finish(self) -> Result<(), Unsupported> {
        *self.bytes += self.place.opening(self.entries == 0);
        Ok(())
    }
}

/// A map key: only strings (and numbers, as text) are modelled.
struct KeyWidth {
    lower: bool,
}

impl ser::Serializer for KeyWidth {
    type Ok = usize;
    type Error = Unsupported;
    type SerializeSeq = ser::Impossible<usize, Unsupported>;
    type SerializeTuple = ser::Impossible<usize, Unsupported>;
    type SerializeTupleStruct = ser::Impossible<usize, Unsupported>;
    type SerializeTupleVariant = ser::Impossible<usize, Unsupported>;
    type SerializeMap = ser::Impossible<usize, Unsupported>;
    type SerializeStruct = ser::Impossible<usize, Unsupported>;
    type SerializeStructVariant = ser::Impossible<usize, Unsupported>;

    fn serialize_str(self, value: &str) -> Result<usize, Unsupported> {
        // Keys never span lines; a multi-line key is not modelled.
        if value.contains('\n') {
            return Err(Unsupported);
        }
        Ok(width(value, 0, self.lower))
    }
    fn serialize_bool(self, value: bool) -> Result<usize, Unsupported> {
        Ok(if value { 4 } else { 5 })
    }
    fn serialize_i64(self, value: i64) -> Result<usize, Unsupported> {
        Ok(digits(u128::from(value.unsigned_abs())) + usize::from(value < 0))
    }
    fn serialize_u64(self, value: u64) -> Result<usize, Unsupported> {
        Ok(digits(u128::from(value)))
    }
    fn serialize_i8(self, value: i8) -> Result<usize, Unsupported> {
        self.serialize_i64(i64::from(value))
    }
    fn serialize_i16(self, value: i16) -> Result<usize, Unsupported> {
        self.serialize_i64(i64::from(value))
    }
    fn serialize_i32(self, value: i32) -> Result<usize, Unsupported> {
        self.serialize_i64(i64::from(value))
    }
    fn serialize_u8(self, value: u8) -> Result<usize, Unsupported> {
        self.serialize_u64(u64::from(value))
    }
    fn serialize_u16(self, value: u16) -> Result<usize, Unsupported> {
        self.serialize_u64(u64::from(value))
    }
    fn serialize_u32(self, value: u32) -> Result<usize, Unsupported> {
        self.serialize_u64(u64::from(value))
    }
    fn serialize_f32(self, _value: f32) -> Result<usize, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_f64(self, _value: f64) -> Result<usize, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_char(self, value: char) -> Result<usize, Unsupported> {
        self.serialize_str(value.encode_utf8(&mut [0; 4]))
    }
    fn serialize_bytes(self, _value: &[u8]) -> Result<usize, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_none(self) -> Result<usize, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<usize, Unsupported> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<usize, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<usize, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<usize, Unsupported> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<usize, Unsupported> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<usize, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }
}

impl<'a> ser::Serializer for Bound<'a> {
    type Ok = ();
    type Error = Unsupported;
    type SerializeSeq = Collection<'a>;
    type SerializeTuple = Collection<'a>;
    type SerializeTupleStruct = Collection<'a>;
    type SerializeTupleVariant = ser::Impossible<(), Unsupported>;
    type SerializeMap = Collection<'a>;
    type SerializeStruct = Collection<'a>;
    type SerializeStructVariant = ser::Impossible<(), Unsupported>;

    fn serialize_bool(self, value: bool) -> Result<(), Unsupported> {
        self.scalar(if value { 4 } else { 5 })
    }
    fn serialize_i8(self, value: i8) -> Result<(), Unsupported> {
        self.serialize_i64(i64::from(value))
    }
    fn serialize_i16(self, value: i16) -> Result<(), Unsupported> {
        self.serialize_i64(i64::from(value))
    }
    fn serialize_i32(self, value: i32) -> Result<(), Unsupported> {
        self.serialize_i64(i64::from(value))
    }
    fn serialize_i64(self, value: i64) -> Result<(), Unsupported> {
        self.scalar(digits(u128::from(value.unsigned_abs())) + usize::from(value < 0))
    }
    fn serialize_u8(self, value: u8) -> Result<(), Unsupported> {
        self.serialize_u64(u64::from(value))
    }
    fn serialize_u16(self, value: u16) -> Result<(), Unsupported> {
        self.serialize_u64(u64::from(value))
    }
    fn serialize_u32(self, value: u32) -> Result<(), Unsupported> {
        self.serialize_u64(u64::from(value))
    }
    fn serialize_u64(self, value: u64) -> Result<(), Unsupported> {
        self.scalar(digits(u128::from(value)))
    }
    fn serialize_f32(self, value: f32) -> Result<(), Unsupported> {
        self.serialize_f64(f64::from(value))
    }
    fn serialize_f64(self, _value: f64) -> Result<(), Unsupported> {
        // The shortest round-trip form of any f64 (`-1.2345678901234567e-308`), or .nan/.inf.
        let width = if self.lower { 1 } else { 24 };
        self.scalar(width)
    }
    fn serialize_char(self, value: char) -> Result<(), Unsupported> {
        self.serialize_str(value.encode_utf8(&mut [0; 4]))
    }
    fn serialize_str(self, value: &str) -> Result<(), Unsupported> {
        let indent = match self.place {
            Place::Top => 0,
            Place::Value { indent, .. } => indent + 2,
            Place::Item { indent } => indent,
        };
        let lower = self.lower;
        self.scalar(width(value, indent, lower))
    }
    fn serialize_bytes(self, _value: &[u8]) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_none(self) -> Result<(), Unsupported> {
        self.scalar(4)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Unsupported> {
        self.scalar(4)
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<(), Unsupported> {
        self.scalar(4)
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<(), Unsupported> {
        self.serialize_str(variant)
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<(), Unsupported> {
        Err(Unsupported)
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Collection<'a>, Unsupported> {
        Ok(self.collection())
    }
    fn serialize_tuple(self, _len: usize) -> Result<Collection<'a>, Unsupported> {
        Ok(self.collection())
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Collection<'a>, Unsupported> {
        Ok(self.collection())
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, Unsupported> {
        Err(Unsupported)
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Collection<'a>, Unsupported> {
        Ok(self.collection())
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Collection<'a>, Unsupported> {
        Ok(self.collection())
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, Unsupported> {
        Err(Unsupported)
    }
}

impl ser::SerializeSeq for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.item(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeTuple for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.item(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeTupleStruct for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        self.item(value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeMap for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), Unsupported> {
        self.key_line = key.serialize(KeyWidth { lower: self.lower })?;
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), Unsupported> {
        let key = self.key_line;
        self.entry(key, value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

impl ser::SerializeStruct for Collection<'_> {
    type Ok = ();
    type Error = Unsupported;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), Unsupported> {
        let lower = self.lower;
        self.entry(width(key, 0, lower), value)
    }
    fn end(self) -> Result<(), Unsupported> {
        self.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[derive(serde::Serialize)]
    struct Sample {
        name: String,
        count: u32,
        flag: bool,
        tags: Vec<String>,
        empty: Vec<String>,
        nested: BTreeMap<String, Vec<Inner>>,
        nothing: Option<String>,
        none_map: BTreeMap<String, String>,
    }

    #[derive(serde::Serialize)]
    struct Inner {
        a: String,
        b: Vec<u16>,
    }

    fn real<T: Serialize>(value: &T) -> usize {
        serde_yaml_ng::to_string(value).expect("yaml").len()
    }

    fn sample(text: &str) -> Sample {
        Sample {
            name: text.to_string(),
            count: 4_000_000_000,
            flag: true,
            tags: vec![
                text.to_string(),
                "10.0.0.0/8".into(),
                "fd00::/8".into(),
                "yes".into(),
            ],
            empty: Vec::new(),
            nested: [(
                "key".to_string(),
                vec![
                    Inner {
                        a: text.to_string(),
                        b: vec![80, 443],
                    },
                    Inner {
                        a: "x".into(),
                        b: Vec::new(),
                    },
                ],
            )]
            .into_iter()
            .collect(),
            nothing: None,
            none_map: BTreeMap::new(),
        }
    }

    #[test]
    fn the_bound_is_never_below_the_real_size() {
        for text in [
            "plain",
            "with space",
            "it's \"quoted\" \\ here",
            "two\nlines\n",
            " leading space",
            "tab\there",
            "ünïcödé",
            "12345",
            "1.5",
            "true",
            "-dash",
            ": colon",
            "#comment",
            "line\u{2028}separator",
            "",
            "10.0.0.0/8",
            "2001:db8::/32",
            "1:20",
            "0x1F",
            "0o17",
            "1e5",
            "0123",
            "2026-11-28",
            "1_000",
            "NaN",
            "Yes",
            "a@b",
            "~",
        ] {
            let value = sample(text);
            let bound = yaml_bound(&value).expect("modelled");
            let real = real(&value);
            assert!(bound >= real, "{text:?}: bound {bound} < real {real}");
            let lower = yaml_lower_bound(&value).expect("modelled");
            assert!(lower <= real, "{text:?}: lower bound {lower} > real {real}");
            assert!(
                bound <= real + 120,
                "{text:?}: bound {bound} far above real {real}"
            );
        }
    }

    #[test]
    fn plain_values_are_counted_exactly() {
        let value = Inner {
            a: "allow-web".into(),
            b: vec![1, 2, 3],
        };
        assert_eq!(yaml_bound(&value).expect("modelled"), real(&value));
        assert_eq!(yaml_lower_bound(&value).expect("modelled"), real(&value));
        let list = vec![
            Inner {
                a: "x".into(),
                b: vec![7],
            },
            Inner {
                a: "w".into(),
                b: Vec::new(),
            },
        ];
        assert_eq!(yaml_bound(&list).expect("modelled"), real(&list));
    }
}
