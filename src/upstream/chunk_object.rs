//! The JSON object of one upstream chunk, shaped for the attempt loop's reads.
//!
//! Owns: [`ChunkObject`], a chunk's fields in order, with its `choices`, each choice's
//! fields and each choice's `delta` (or `message`) held as small ordered maps ([`Fields`]),
//! and everything below them as `serde_json` values; parsing one from JSON text, building
//! one from a `serde_json` map, and writing it back as JSON. Whatever the representation,
//! the object is the JSON the provider sent: [`ChunkObject::to_value`] equals what
//! `serde_json` would have parsed, and serialising it writes the same text. Does not own
//! what the fields mean (`chunk`, `commit`, `accumulate`).
//!
//! Why: a chunk comes every few tokens, and every one is read by the commit stamp, the
//! tool-call count and, for a non-streaming client, the aggregation. As `serde_json` maps,
//! its three levels cost a hashed insert and an allocated key per field (about fifteen per
//! chunk) and a table per map: half of the gateway's instructions per request. Here a key
//! the chunk format names is a static string, a field is found by comparing a handful of
//! keys, and each level is one vector.

use std::borrow::Cow;

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value};

use crate::json::SIZED;

/// A field name: the chunk format's own names are static; a provider's others are owned.
pub type Key = Cow<'static, str>;

/// An object's fields, in order, found by comparing keys. Behaves as a `serde_json` map
/// does: inserting a key already there keeps its place and replaces its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Fields<V> {
    entries: Vec<(Key, V)>,
}

impl<V> Default for Fields<V> {
    fn default() -> Self {
        Fields {
            entries: Vec::new(),
        }
    }
}

impl<V> Fields<V> {
    pub fn new() -> Self {
        Fields::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&V> {
        self.entries
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut V> {
        self.entries
            .iter_mut()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Sets `key`, keeping its place if it is there; returns the value it replaced.
    pub fn insert(&mut self, key: impl Into<Key>, value: V) -> Option<V> {
        let key = key.into();
        match self.get_mut(&key) {
            Some(old) => Some(std::mem::replace(old, value)),
            None => {
                self.entries.push((key, value));
                None
            }
        }
    }

    /// Removes `key`, keeping the others in order.
    pub fn shift_remove(&mut self, key: &str) -> Option<V> {
        let at = self.entries.iter().position(|(k, _)| k == key)?;
        Some(self.entries.remove(at).1)
    }

    /// Replaces `from` and its value with `to` and `value`, in `from`'s place; returns the
    /// value it replaced (`None`, and nothing changed, when `from` is not there).
    pub fn rename(&mut self, from: &str, to: impl Into<Key>, value: V) -> Option<V> {
        let at = self.entries.iter().position(|(k, _)| k == from)?;
        let (_, old) = std::mem::replace(&mut self.entries[at], (to.into(), value));
        Some(old)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.entries.iter().map(|(k, v)| (k.as_ref(), v))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (&str, &mut V)> {
        self.entries.iter_mut().map(|(k, v)| {
            // Keys are never changed in place: a shared borrow for as long as the map's.
            let k: &Key = k;
            (k.as_ref(), v)
        })
    }

    fn with_capacity(n: usize) -> Self {
        Fields {
            entries: Vec::with_capacity(n),
        }
    }
}

impl<V: Serialize> Serialize for Fields<V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (k, v) in &self.entries {
            map.serialize_entry(k.as_ref(), v)?;
        }
        map.end()
    }
}

/// A chunk's top-level value: its `choices`, when they are an array, or any other JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Top {
    Choices(Vec<Choice>),
    Json(Value),
}

/// One element of `choices`: a choice object, or whatever else a provider put there.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    Object(Fields<ChoiceField>),
    Json(Value),
}

/// A choice's field: its `delta` (or a completion's `message`), when an object, or any
/// other JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum ChoiceField {
    Delta(Fields<Value>),
    Json(Value),
}

/// A chunk's JSON object.
pub type ChunkObject = Fields<Top>;

impl Fields<Top> {
    /// Parses JSON text that must be an object: `Ok(None)` for valid JSON of another kind,
    /// with `serde_json`'s error (the same as `serde_json::from_str` gives) for invalid.
    pub fn parse(text: &str) -> serde_json::Result<Option<ChunkObject>> {
        let mut de = serde_json::Deserializer::from_str(text);
        let object = ObjectSeed::<TopLevel>::default().deserialize(&mut de)?;
        de.end()?;
        Ok(object)
    }

    /// The object a `serde_json` map holds.
    pub fn from_map(map: Map<String, Value>) -> ChunkObject {
        let mut object = Fields::with_capacity(map.len());
        for (k, v) in map {
            let top = Top::from_json(&k, v);
            object.entries.push((key(k), top));
        }
        object
    }

    /// The `choices`, when they are an array.
    pub fn choices(&self) -> Option<&[Choice]> {
        match self.get("choices") {
            Some(Top::Choices(c)) => Some(c),
            _ => None,
        }
    }

    /// A top-level field that is not the `choices` array.
    pub fn json(&self, key: &str) -> Option<&Value> {
        match self.get(key) {
            Some(Top::Json(v)) => Some(v),
            _ => None,
        }
    }

    /// The whole object as a `serde_json` value.
    pub fn to_value(&self) -> Value {
        Value::Object(
            self.iter()
                .map(|(k, v)| (k.to_string(), v.to_value()))
                .collect(),
        )
    }

    /// The JSON values it holds (every object, array, string, number, boolean and null
    /// counts one, itself included), as `json::from_slice_bounded` counts them.
    pub fn value_count(&self) -> usize {
        1 + self
            .iter()
            .map(|(_, top)| match top {
                Top::Choices(choices) => {
                    1 + choices
                        .iter()
                        .map(|choice| match choice {
                            Choice::Object(fields) => {
                                1 + fields
                                    .iter()
                                    .map(|(_, field)| match field {
                                        ChoiceField::Delta(delta) => {
                                            1 + delta
                                                .iter()
                                                .map(|(_, v)| values_in(v))
                                                .sum::<usize>()
                                        }
                                        ChoiceField::Json(v) => values_in(v),
                                    })
                                    .sum::<usize>()
                            }
                            Choice::Json(v) => values_in(v),
                        })
                        .sum::<usize>()
                }
                Top::Json(v) => values_in(v),
            })
            .sum::<usize>()
    }
}

/// The JSON values in `v`, itself included.
fn values_in(v: &Value) -> usize {
    1 + match v {
        Value::Array(items) => items.iter().map(values_in).sum(),
        Value::Object(map) => map.values().map(values_in).sum(),
        _ => 0,
    }
}

impl Top {
    fn from_json(key: &str, value: Value) -> Top {
        match (key, value) {
            ("choices", Value::Array(items)) => {
                Top::Choices(items.into_iter().map(Choice::from_json).collect())
            }
            (_, value) => Top::Json(value),
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            Top::Choices(c) => Value::Array(c.iter().map(Choice::to_value).collect()),
            Top::Json(v) => v.clone(),
        }
    }
}

impl Choice {
    fn from_json(value: Value) -> Choice {
        match value {
            Value::Object(map) => {
                let mut fields = Fields::with_capacity(map.len());
                for (k, v) in map {
                    let field = ChoiceField::from_json(&k, v);
                    fields.entries.push((key(k), field));
                }
                Choice::Object(fields)
            }
            other => Choice::Json(other),
        }
    }

    /// The choice's fields, when it is an object.
    pub fn fields(&self) -> Option<&Fields<ChoiceField>> {
        match self {
            Choice::Object(f) => Some(f),
            Choice::Json(_) => None,
        }
    }

    /// Its `index`, if a non-negative integer.
    pub fn index(&self) -> Option<u64> {
        match self.fields()?.get("index")? {
            ChoiceField::Json(v) => v.as_u64(),
            ChoiceField::Delta(_) => None,
        }
    }

    /// Its `delta`, or else its `message`, as it is (of any kind).
    pub fn delta(&self) -> Option<&ChoiceField> {
        let fields = self.fields()?;
        fields.get("delta").or_else(|| fields.get("message"))
    }

    pub fn to_value(&self) -> Value {
        match self {
            Choice::Object(f) => Value::Object(
                f.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
            Choice::Json(v) => v.clone(),
        }
    }
}

impl ChoiceField {
    fn from_json(key: &str, value: Value) -> ChoiceField {
        match (key, value) {
            ("delta" | "message", Value::Object(map)) => {
                let mut fields = Fields::with_capacity(map.len());
                for (k, v) in map {
                    fields.entries.push((self::key(k), v));
                }
                ChoiceField::Delta(fields)
            }
            (_, value) => ChoiceField::Json(value),
        }
    }

    /// The delta's fields, when it is an object.
    pub fn object(&self) -> Option<&Fields<Value>> {
        match self {
            ChoiceField::Delta(d) => Some(d),
            ChoiceField::Json(_) => None,
        }
    }

    /// The field as JSON, when it is not an object delta.
    pub fn json(&self) -> Option<&Value> {
        match self {
            ChoiceField::Json(v) => Some(v),
            ChoiceField::Delta(_) => None,
        }
    }

    pub fn to_value(&self) -> Value {
        match self {
            ChoiceField::Delta(d) => {
                Value::Object(d.iter().map(|(k, v)| (k.to_string(), v.clone())).collect())
            }
            ChoiceField::Json(v) => v.clone(),
        }
    }
}

impl Serialize for Top {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Top::Choices(c) => {
                let mut seq = s.serialize_seq(Some(c.len()))?;
                for choice in c {
                    seq.serialize_element(choice)?;
                }
                seq.end()
            }
            Top::Json(v) => v.serialize(s),
        }
    }
}

impl Serialize for Choice {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Choice::Object(f) => f.serialize(s),
            Choice::Json(v) => v.serialize(s),
        }
    }
}

impl Serialize for ChoiceField {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            ChoiceField::Delta(d) => d.serialize(s),
            ChoiceField::Json(v) => v.serialize(s),
        }
    }
}

/// The names the chunk format uses, as static strings (no allocation per field).
fn known(name: &str) -> Option<&'static str> {
    Some(match name {
        "id" => "id",
        "object" => "object",
        "created" => "created",
        "model" => "model",
        "choices" => "choices",
        "usage" => "usage",
        "service_tier" => "service_tier",
        "system_fingerprint" => "system_fingerprint",
        "obfuscation" => "obfuscation",
        "index" => "index",
        "delta" => "delta",
        "message" => "message",
        "logprobs" => "logprobs",
        "finish_reason" => "finish_reason",
        "role" => "role",
        "content" => "content",
        "refusal" => "refusal",
        "tool_calls" => "tool_calls",
        "reasoning_content" => "reasoning_content",
        "content_filter_results" => "content_filter_results",
        _ => return None,
    })
}

fn key(name: String) -> Key {
    match known(&name) {
        Some(k) => Cow::Borrowed(k),
        None => Cow::Owned(name),
    }
}

/// A field name, static when known.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E>(self, v: &str) -> Result<Key, E> {
        Ok(match known(v) {
            Some(k) => Cow::Borrowed(k),
            None => Cow::Owned(v.to_owned()),
        })
    }

    fn visit_string<E>(self, v: String) -> Result<Key, E> {
        Ok(key(v))
    }
}

/// A level of the chunk's object: how its values are read, and what a value that is not
/// an object of this level becomes.
trait Level: Default {
    type Value;
    /// Reads the value of `key`.
    fn value<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Self::Value, A::Error>;
}

#[derive(Default)]
struct TopLevel;

impl Level for TopLevel {
    type Value = Top;
    fn value<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<Top, A::Error> {
        if key == "choices" {
            map.next_value_seed(ChoicesSeed)
        } else {
            map.next_value_seed(SIZED).map(Top::Json)
        }
    }
}

#[derive(Default)]
struct ChoiceLevel;

impl Level for ChoiceLevel {
    type Value = ChoiceField;
    fn value<'de, A: MapAccess<'de>>(key: &str, map: &mut A) -> Result<ChoiceField, A::Error> {
        if key == "delta" || key == "message" {
            map.next_value_seed(DeltaSeed)
        } else {
            map.next_value_seed(SIZED).map(ChoiceField::Json)
        }
    }
}

#[derive(Default)]
struct DeltaLevel;

impl Level for DeltaLevel {
    type Value = Value;
    fn value<'de, A: MapAccess<'de>>(_: &str, map: &mut A) -> Result<Value, A::Error> {
        map.next_value_seed(SIZED)
    }
}

/// An object of level `L`, or `None` for valid JSON that is not an object.
#[derive(Default)]
struct ObjectSeed<L>(std::marker::PhantomData<L>);

impl<'de, L: Level> DeserializeSeed<'de> for ObjectSeed<L> {
    type Value = Option<Fields<L::Value>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Any JSON that is not an object: validated as `serde_json` would, and dropped.
macro_rules! not_an_object {
    ($out:ty, $wrap:expr) => {
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<$out, E> {
            SIZED.visit_bool(v).map($wrap)
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$out, E> {
            SIZED.visit_i64(v).map($wrap)
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$out, E> {
            SIZED.visit_u64(v).map($wrap)
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$out, E> {
            SIZED.visit_f64(v).map($wrap)
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$out, E> {
            SIZED.visit_str(v).map($wrap)
        }
        fn visit_string<E: serde::de::Error>(self, v: String) -> Result<$out, E> {
            SIZED.visit_string(v).map($wrap)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<$out, E> {
            SIZED.visit_none().map($wrap)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<$out, E> {
            SIZED.visit_unit().map($wrap)
        }
        fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<$out, D::Error> {
            d.deserialize_any(self)
        }
    };
}

impl<'de, L: Level> Visitor<'de> for ObjectSeed<L> {
    type Value = Option<Fields<L::Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    not_an_object!(Option<Fields<L::Value>>, |_| None);

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        SIZED.visit_seq(seq).map(|_| None)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        read_fields::<L, A>(map).map(Some)
    }
}

/// Objects up to this many keys find a repeated key by comparing; past it, through an index
/// of the keys (an upstream sending a chunk of many thousand keys must not cost quadratic
/// time).
const COMPARED_KEYS: usize = 16;

/// An object's fields, each value read as level `L` reads it.
fn read_fields<'de, L: Level, A: MapAccess<'de>>(mut map: A) -> Result<Fields<L::Value>, A::Error> {
    let mut fields = Fields::with_capacity(8);
    let mut positions: Option<std::collections::BTreeMap<Key, usize>> = None;
    while let Some(key) = map.next_key_seed(KeySeed)? {
        let value = L::value(&key, &mut map)?;
        if fields.len() < COMPARED_KEYS {
            fields.insert(key, value);
            continue;
        }
        let positions = positions.get_or_insert_with(|| {
            let keys = fields.entries.iter().map(|(k, _)| k.clone());
            keys.zip(0..).collect()
        });
        match positions.get(&key) {
            Some(&at) => fields.entries[at].1 = value,
            None => {
                positions.insert(key.clone(), fields.entries.len());
                fields.entries.push((key, value));
            }
        }
    }
    Ok(fields)
}

/// A choice's `delta` or `message`: an object's fields, or any other JSON.
struct DeltaSeed;

impl<'de> DeserializeSeed<'de> for DeltaSeed {
    type Value = ChoiceField;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<ChoiceField, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for DeltaSeed {
    type Value = ChoiceField;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    not_an_object!(ChoiceField, ChoiceField::Json);

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<ChoiceField, A::Error> {
        SIZED.visit_seq(seq).map(ChoiceField::Json)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ChoiceField, A::Error> {
        read_fields::<DeltaLevel, A>(map).map(ChoiceField::Delta)
    }
}

/// The `choices`: an array of choices, or any other JSON.
struct ChoicesSeed;

impl<'de> DeserializeSeed<'de> for ChoicesSeed {
    type Value = Top;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Top, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoicesSeed {
    type Value = Top;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    not_an_object!(Top, Top::Json);

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Top, A::Error> {
        SIZED.visit_map(map).map(Top::Json)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        let mut choices = Vec::new();
        while let Some(choice) = seq.next_element_seed(ChoiceSeed)? {
            choices.push(choice);
        }
        Ok(Top::Choices(choices))
    }
}

/// One element of `choices`.
struct ChoiceSeed;

impl<'de> DeserializeSeed<'de> for ChoiceSeed {
    type Value = Choice;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Choice, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ChoiceSeed {
    type Value = Choice;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    not_an_object!(Choice, Choice::Json);

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Choice, A::Error> {
        SIZED.visit_seq(seq).map(Choice::Json)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Choice, A::Error> {
        read_fields::<ChoiceLevel, A>(map).map(Choice::Object)
    }
}

#[cfg(test)]
mod value_count_tests {
    use super::*;

    /// A chunk's count is the one the bounded parse counts for the same text.
    #[test]
    fn a_chunks_values_are_counted_as_the_bounded_parse_counts_them() {
        for text in [
            r#"{}"#,
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a","tool_calls":[{"index":0}]},"logprobs":{"content":[1,2]},"finish_reason":null}],"usage":null}"#,
            r#"{"choices":[1,[2],{"message":{"role":"assistant"}}],"x":{"y":[true,null]}}"#,
            r#"{"choices":null}"#,
        ] {
            let object = ChunkObject::parse(text).unwrap().unwrap();
            let n = object.value_count();
            assert!(
                crate::json::from_slice_bounded(text.as_bytes(), n).is_ok(),
                "{text}"
            );
            assert!(
                crate::json::from_slice_bounded(text.as_bytes(), n - 1).is_err(),
                "{text}: {n} values"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON text shaped like chunks (and not): the chunk format's names and others, at
    /// every level, repeated keys, values of every kind, and text `serde_json` refuses.
    fn chunk_text() -> impl Strategy<Value = String> + Clone {
        json_text(prop_oneof![
            8 => valid_leaf(),
            1 => Just("1e400".to_string()),
            1 => Just(r#""\ud800""#.to_string()),
        ])
    }

    /// Scalars `serde_json` takes.
    fn valid_leaf() -> impl Strategy<Value = String> + Clone {
        prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|n| format!("{n:e}")),
            "[a-z\\\\\"é\n]{0,6}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            Just(r#""\u00e9""#.to_string()),
        ]
    }

    fn json_text(
        leaf: impl Strategy<Value = String> + Clone + 'static,
    ) -> impl Strategy<Value = String> + Clone {
        let names = prop_oneof![
            Just("id"),
            Just("model"),
            Just("choices"),
            Just("usage"),
            Just("index"),
            Just("delta"),
            Just("message"),
            Just("content"),
            Just("role"),
            Just("finish_reason"),
            Just("x"),
            Just("d\\u0065lta"),
        ];
        leaf.prop_recursive(4, 64, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec((names.clone(), inner), 0..8).prop_map(|entries| {
                    let fields: Vec<String> = entries
                        .iter()
                        .map(|(k, v)| format!("\"{k}\": {v}"))
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }),
            ]
        })
    }

    /// An object's text from its entries (names may repeat).
    fn object_text(entries: Vec<(&str, String)>) -> String {
        let fields: Vec<String> = entries
            .iter()
            .map(|(k, v)| format!("\"{k}\":{v}"))
            .collect();
        format!("{{{}}}", fields.join(","))
    }

    /// Text shaped as a chunk is: choices holding deltas or messages, at their places, with
    /// anything else (of any kind) around and in them.
    fn chunk_shaped() -> impl Strategy<Value = String> {
        let any = json_text(valid_leaf());
        let delta = prop_oneof![
            prop::collection::vec(
                (
                    prop_oneof![Just("content"), Just("role"), Just("x")],
                    any.clone()
                ),
                0..4
            )
            .prop_map(object_text),
            any.clone(),
        ];
        let choice_field = prop_oneof![
            (prop_oneof![Just("delta"), Just("message")], delta),
            (
                prop_oneof![Just("index"), Just("finish_reason"), Just("logprobs")],
                any.clone()
            ),
        ];
        let choice = prop_oneof![
            4 => prop::collection::vec(choice_field, 0..5).prop_map(object_text),
            1 => any.clone(),
        ];
        let choices = prop_oneof![
            4 => prop::collection::vec(choice, 0..3).prop_map(|c| format!("[{}]", c.join(","))),
            1 => any.clone(),
        ];
        let top_field = prop_oneof![
            (Just("choices"), choices),
            (
                prop_oneof![Just("id"), Just("model"), Just("usage"), Just("x")],
                any
            ),
        ];
        prop::collection::vec(top_field, 0..6).prop_map(object_text)
    }

    fn same_as_serde_json(text: &str) {
        let theirs = serde_json::from_str::<Value>(text);
        match (ChunkObject::parse(text), theirs) {
            (Ok(Some(ours)), Ok(theirs)) => {
                assert_eq!(ours.to_value(), theirs, "{text}");
                assert_eq!(
                    serde_json::to_string(&ours).unwrap(),
                    serde_json::to_string(&theirs).unwrap(),
                    "{text}"
                );
                let Value::Object(map) = theirs else {
                    panic!("an object parses as one: {text}")
                };
                assert_eq!(ChunkObject::from_map(map), ours, "{text}");
            }
            (Ok(None), Ok(theirs)) => assert!(!theirs.is_object(), "{text}"),
            (Err(ours), Err(theirs)) => assert_eq!(ours.to_string(), theirs.to_string()),
            (ours, theirs) => panic!("{text}: {ours:?} against {theirs:?}"),
        }
    }

    proptest! {
        #[test]
        fn the_object_serde_json_parses(text in chunk_text(), cut in any::<prop::sample::Index>()) {
            same_as_serde_json(&text);
            let at = cut.index(text.len() + 1);
            if text.is_char_boundary(at) {
                same_as_serde_json(&text[..at]);
            }
            same_as_serde_json(&format!("{text} x"));
        }

        #[test]
        fn a_chunk_shaped_object_serde_json_parses(text in chunk_shaped(), cut in any::<prop::sample::Index>()) {
            same_as_serde_json(&text);
            let at = cut.index(text.len() + 1);
            if text.is_char_boundary(at) {
                same_as_serde_json(&text[..at]);
            }
        }
    }

    #[test]
    fn choices_and_deltas_are_read_apart() {
        let text = r#"{"id":"a","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null},7],"usage":null}"#;
        same_as_serde_json(text);
        let object = ChunkObject::parse(text).unwrap().unwrap();
        let choices = object.choices().expect("an array");
        assert_eq!(choices.len(), 2);
        assert_eq!(choices[0].index(), Some(0));
        let delta = choices[0].delta().and_then(ChoiceField::object).unwrap();
        assert_eq!(delta.get("content"), Some(&Value::from("hi")));
        assert_eq!(choices[1], Choice::Json(Value::from(7)));
        assert_eq!(object.json("usage"), Some(&Value::Null));
    }

    #[test]
    fn repeated_keys_keep_their_first_place_and_last_value() {
        let text =
            r#"{"choices":1,"id":"a","choices":[{"delta":2,"delta":{"role":"x","role":"y"}}]}"#;
        same_as_serde_json(text);
        let object = ChunkObject::parse(text).unwrap().unwrap();
        assert_eq!(
            serde_json::to_string(&object).unwrap(),
            r#"{"choices":[{"delta":{"role":"y"}}],"id":"a"}"#
        );
        let mut fields = Fields::new();
        fields.insert("a", 1);
        fields.insert("b", 2);
        assert_eq!(fields.insert("a", 3), Some(1));
        assert_eq!(fields.shift_remove("a"), Some(3));
        assert_eq!(fields.iter().collect::<Vec<_>>(), [("b", &2)]);
    }

    #[test]
    fn many_keys_and_their_repeats_read_as_serde_json_reads_them() {
        // Past the compared keys, repeats are found through an index: same result.
        let keys: Vec<String> = (0..5_000)
            .map(|i| format!("\"k{}\":{i}", i % 3_000))
            .collect();
        let text = format!(
            "{{\"choices\":[{{\"delta\":{{{}}}}}],{}}}",
            keys.join(","),
            keys.join(",")
        );
        same_as_serde_json(&text);
        let object = ChunkObject::parse(&text).unwrap().unwrap();
        assert_eq!(object.len(), 3_001);
        assert_eq!(
            object.json("k10"),
            Some(&Value::from(3_010)),
            "the last value"
        );
    }
}
