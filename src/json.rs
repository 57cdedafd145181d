//! JSON text into a [`serde_json::Value`], with every small object's map allocated once,
//! at its final size.
//!
//! Owns: [`from_str`] and [`from_slice`], which give exactly what `serde_json`'s own do
//! (the same values, in the same order, and the same errors); and [`field`] and
//! [`field_mut`], a map's lookup without hashing the key when the map is small. Does not
//! own what any JSON means: callers interpret the value.
//!
//! Why: `serde_json` builds a map by inserting into an empty one, which reallocates and
//! rehashes it as it grows (3, 7, then 14 slots). A streamed chunk is three small maps (the
//! chunk, its choice, the choice's delta) with about fifteen keys between them, and comes
//! every few tokens: the growth was about a tenth of the gateway's instructions per
//! request. Here an object's first eight entries are collected on the stack and its map is
//! allocated once for them; a larger object goes straight into its map from there on, as
//! serde_json does, so that its memory follows its distinct keys, however often one repeats
//! (`tests/json_memory.rs`). Likewise a lookup in a map of a
//! few keys compares them rather than hashing the key with SipHash (`serde_json` maps use
//! the standard library's hasher), which costs more than the comparisons.

use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use smallvec::SmallVec;

/// Entries of one object collected before its map is built: most objects on the hot path
/// have at most this many keys.
const INLINE_ENTRIES: usize = 8;

/// Parses JSON text, as `serde_json::from_str::<Value>` does.
pub fn from_str(text: &str) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = SIZED.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Parses JSON bytes, as `serde_json::from_slice::<Value>` does.
pub fn from_slice(bytes: &[u8]) -> serde_json::Result<Value> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = SIZED.deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// Why [`from_slice_bounded`] gave no value.
#[derive(Debug)]
pub enum BoundedError {
    /// Not JSON, as `serde_json` says.
    Json(serde_json::Error),
    /// Valid so far, but with more values than allowed: parsing stopped there.
    TooManyValues,
}

/// [`from_slice`], refusing text of more than `max_values` values (every object, array,
/// string, number, boolean and null counts one; keys do not). Why: a value in memory is
/// about 80 bytes where its text can be two (`0,`), so the text's size alone does not bound
/// the tree's: a 50 MiB array of zeros is 2 GiB of values. Parsing stops at the first value
/// over, before it is built.
pub fn from_slice_bounded(bytes: &[u8], max_values: usize) -> Result<Value, BoundedError> {
    from_slice_counted(bytes, max_values).map(|(value, _)| value)
}

/// [`from_slice_bounded`], with how many values the tree holds.
pub fn from_slice_counted(bytes: &[u8], max_values: usize) -> Result<(Value, usize), BoundedError> {
    let left = std::cell::Cell::new(max_values);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = SizedValue(&left)
        .deserialize(&mut de)
        .and_then(|value| de.end().map(|()| value));
    match parsed {
        Ok(value) => Ok((value, max_values - left.get())),
        // The budget's own refusal is the only custom error a value's visitor makes.
        Err(e) if e.classify() == serde_json::error::Category::Data && left.get() == 0 => {
            Err(BoundedError::TooManyValues)
        }
        Err(e) => Err(BoundedError::Json(e)),
    }
}

/// Maps up to this many keys are searched key by key, larger ones by hash.
const SMALL_MAP: usize = 16;

/// `map.get(key)`, by comparing keys when the map is small.
pub fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    if map.len() > SMALL_MAP {
        return map.get(key);
    }
    map.iter().find_map(|(k, v)| (k == key).then_some(v))
}

/// `map.get_mut(key)`, by comparing keys when the map is small.
pub fn field_mut<'a>(map: &'a mut Map<String, Value>, key: &str) -> Option<&'a mut Value> {
    if map.len() > SMALL_MAP {
        return map.get_mut(key);
    }
    map.iter_mut().find_map(|(k, v)| (k == key).then_some(v))
}

/// `value.get(key)` for an object, by comparing keys when it is small.
pub fn member<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => field(map, key),
        _ => None,
    }
}

/// What a parse may still build: every value it visits spends one.
pub(crate) trait Budget: Copy {
    /// Spends one value; false when none is left.
    fn spend(self) -> bool;
}

/// No bound: the parse of a value already bounded by its text (an SSE event's line).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unbounded;

impl Budget for Unbounded {
    #[inline(always)]
    fn spend(self) -> bool {
        true
    }
}

/// The values left, counted down.
impl Budget for &std::cell::Cell<usize> {
    fn spend(self) -> bool {
        match self.get().checked_sub(1) {
            Some(left) => {
                self.set(left);
                true
            }
            None => false,
        }
    }
}

/// A JSON value whose maps are sized once (the visitor mirrors `serde_json`'s own), within
/// a [`Budget`] of values.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SizedValue<B = Unbounded>(pub(crate) B);

/// The unbounded [`SizedValue`].
pub(crate) const SIZED: SizedValue = SizedValue(Unbounded);

impl<'de, B: Budget> DeserializeSeed<'de> for SizedValue<B> {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if !self.0.spend() {
            return Err(serde::de::Error::custom("too many JSON values"));
        }
        d.deserialize_any(self)
    }
}

impl<'de, B: Budget> Visitor<'de> for SizedValue<B> {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any valid JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: SmallVec<[(String, Value); INLINE_ENTRIES]> = SmallVec::new();
        // Past the inline entries, straight into the map, as `serde_json` does: held
        // entries would grow with every repeat of a key, the map only with new keys.
        let mut large: Option<Map<String, Value>> = None;
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(self)?;
            match &mut large {
                Some(object) => {
                    object.insert(key, value);
                }
                None if entries.len() < INLINE_ENTRIES => entries.push((key, value)),
                None => {
                    let mut object = Map::with_capacity(2 * INLINE_ENTRIES);
                    object.extend(entries.drain(..));
                    object.insert(key, value);
                    large = Some(object);
                }
            }
        }
        let object = large.unwrap_or_else(|| {
            let mut object = Map::with_capacity(entries.len());
            // In order, one by one: a repeated key keeps its first place and its last
            // value, as `serde_json` has it.
            object.extend(entries);
            object
        });
        Ok(Value::Object(object))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// JSON text of every kind, including what `serde_json` refuses (lone surrogates,
    /// numbers out of range, trailing garbage) and repeated keys.
    fn json_text() -> impl Strategy<Value = String> {
        // What `serde_json` refuses is rare enough that most texts parse.
        let leaf = prop_oneof![
            4 => Just("null".to_string()),
            4 => Just("true".to_string()),
            4 => Just("false".to_string()),
            4 => any::<i64>().prop_map(|n| n.to_string()),
            4 => any::<u64>().prop_map(|n| n.to_string()),
            4 => any::<f64>().prop_map(|n| format!("{n:e}")),
            1 => Just("1e400".to_string()),
            4 => Just("-0.0".to_string()),
            4 => Just("18446744073709551616".to_string()),
            4 => "[a-z\\\\\"é\u{1F600}\n]{0,8}".prop_map(|s| serde_json::to_string(&s).unwrap()),
            4 => Just(r#""\ud83d\ude00""#.to_string()),
            1 => Just(r#""\ud800""#.to_string()),
            4 => Just(r#""\u00e9\n\t\/""#.to_string()),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6)
                    .prop_map(|items| format!("[{}]", items.join(","))),
                prop::collection::vec(("[a-c]{1,2}", inner), 0..12).prop_map(|entries| {
                    let fields: Vec<String> = entries
                        .iter()
                        .map(|(k, v)| format!("\"{k}\" : {v}"))
                        .collect();
                    format!("{{ {} }}", fields.join(" ,"))
                }),
            ]
        })
    }

    fn same_as_serde_json(text: &str) {
        let ours = from_str(text).map_err(|e| e.to_string());
        let theirs = serde_json::from_str::<Value>(text).map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
        let ours = from_slice(text.as_bytes()).map_err(|e| e.to_string());
        let theirs = serde_json::from_slice::<Value>(text.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(ours, theirs, "{text}");
        if let Ok(value) = from_str(text) {
            // Equal maps may still differ in order: the text they make may not.
            assert_eq!(
                serde_json::to_string(&value).unwrap(),
                serde_json::to_string(&serde_json::from_str::<Value>(text).unwrap()).unwrap()
            );
        }
    }

    proptest! {
        #[test]
        fn the_same_value_and_errors_as_serde_json(text in json_text(), cut in any::<prop::sample::Index>(), junk in "[ \\]},x]{0,2}") {
            same_as_serde_json(&text);
            same_as_serde_json(&format!("{text}{junk}"));
            let at = cut.index(text.len() + 1);
            if text.is_char_boundary(at) {
                same_as_serde_json(&text[..at]);
            }
        }
    }

    #[test]
    fn repeated_keys_keep_their_first_place_and_last_value() {
        let text = r#"{"a":1,"b":2,"a":3,"c":{"x":[1,{"y":null}]}}"#;
        same_as_serde_json(text);
        assert_eq!(
            serde_json::to_string(&from_str(text).unwrap()).unwrap(),
            r#"{"a":3,"b":2,"c":{"x":[1,{"y":null}]}}"#
        );
    }

    #[test]
    fn a_small_or_large_maps_field_is_the_one_get_finds() {
        for n in [0, 1, 5, SMALL_MAP, SMALL_MAP + 1, 40] {
            let mut map: Map<String, Value> =
                (0..n).map(|i| (format!("k{i}"), Value::from(i))).collect();
            for key in ["k0", "k4", "k16", "k39", "absent", ""] {
                assert_eq!(field(&map, key), map.get(key), "{n} {key}");
                assert_eq!(member(&Value::Object(map.clone()), key), map.get(key));
                let expected = map.get(key).cloned();
                assert_eq!(field_mut(&mut map, key).map(|v| v.clone()), expected);
            }
            if let Some(v) = field_mut(&mut map, "k0") {
                *v = Value::Null;
                assert_eq!(map["k0"], Value::Null, "the same entry, not a copy");
            }
        }
        assert_eq!(member(&Value::Null, "k0"), None);
    }

    #[test]
    fn deep_nesting_is_refused_as_serde_json_refuses_it() {
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        same_as_serde_json(&deep);
        assert!(from_str(&deep).is_err(), "the recursion limit holds");
    }
}
