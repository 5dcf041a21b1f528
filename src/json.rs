//! Documents from servers and stores (token answers, provider metadata, key sets, ID token
//! claims, snapshots) read in two steps: serde_json parses the text into one strict
//! [`Object`], then each type takes its members by name. One generic reader serves every
//! document type instead of a derived deserializer per type, which is most of what the
//! WebAssembly build would otherwise carry (the README's size levers measure it); the rules
//! stay those of serde's derived readers: a required member missing or of the wrong type is
//! refused, `null` is absent where a member is optional, unknown members are ignored, and a
//! member twice (at any depth) is refused, since parsers disagree on which one counts.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A JSON object whose members each appear once, at every depth. Members are taken out by
/// name (leaving `null` behind, cheaper than removing them); `rest` is what was not taken.
/// No `Debug`: a token answer's members are tokens.
pub(crate) struct Object {
    members: Map<String, Value>,
    taken: Vec<&'static str>,
}

/// The member that is missing or has the wrong type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Wrong(pub &'static str);

impl fmt::Display for Wrong {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "`{}` is missing or has the wrong type", self.0)
    }
}

impl Object {
    /// Parses `text` as one JSON object.
    pub(crate) fn parse(text: &[u8]) -> Result<Object, serde_json::Error> {
        serde_json::from_slice(text)
    }

    fn take(&mut self, name: &'static str) -> Option<Value> {
        self.taken.push(name);
        self.members.get_mut(name).map(Value::take).filter(|v| !v.is_null())
    }

    /// An optional member: absent or `null` is `None`.
    pub(crate) fn string(&mut self, name: &'static str) -> Result<Option<String>, Wrong> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(Wrong(name)),
        }
    }

    pub(crate) fn required_string(&mut self, name: &'static str) -> Result<String, Wrong> {
        self.string(name)?.ok_or(Wrong(name))
    }

    /// A whole number from 0 up, read without taking it.
    pub(crate) fn peek_u64(&self, name: &str) -> Option<u64> {
        self.members.get(name).and_then(Value::as_u64)
    }

    /// A whole number from 0 up (a fraction or a sign is refused).
    pub(crate) fn u64(&mut self, name: &'static str) -> Result<Option<u64>, Wrong> {
        self.take(name).map(|v| v.as_u64().ok_or(Wrong(name))).transpose()
    }

    pub(crate) fn required_u64(&mut self, name: &'static str) -> Result<u64, Wrong> {
        self.u64(name)?.ok_or(Wrong(name))
    }

    /// Any number.
    pub(crate) fn f64(&mut self, name: &'static str) -> Result<Option<f64>, Wrong> {
        self.take(name).map(|v| v.as_f64().ok_or(Wrong(name))).transpose()
    }

    pub(crate) fn boolean(&mut self, name: &'static str) -> Result<Option<bool>, Wrong> {
        self.take(name).map(|v| v.as_bool().ok_or(Wrong(name))).transpose()
    }

    /// An array of strings.
    pub(crate) fn strings(&mut self, name: &'static str) -> Result<Option<Vec<String>>, Wrong> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s),
                    _ => Err(Wrong(name)),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(Wrong(name)),
        }
    }

    /// A member that is itself an object.
    pub(crate) fn object(&mut self, name: &'static str) -> Result<Option<Object>, Wrong> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Object(map)) => Ok(Some(Object::from(map))),
            Some(_) => Err(Wrong(name)),
        }
    }

    /// An array of objects.
    pub(crate) fn objects(&mut self, name: &'static str) -> Result<Option<Vec<Object>>, Wrong> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Array(items)) => items
                .into_iter()
                .map(|item| match item {
                    Value::Object(map) => Ok(Object::from(map)),
                    _ => Err(Wrong(name)),
                })
                .collect::<Result<_, _>>()
                .map(Some),
            Some(_) => Err(Wrong(name)),
        }
    }

    /// A member as it is (`null` is absent).
    pub(crate) fn value(&mut self, name: &'static str) -> Option<Value> {
        self.take(name)
    }

    /// Every member not taken.
    pub(crate) fn rest(self) -> Map<String, Value> {
        if self.taken.is_empty() {
            return self.members;
        }
        let mut rest = Map::new();
        for (name, value) in self.members {
            if !self.taken.contains(&name.as_str()) {
                rest.insert(name, value);
            }
        }
        rest
    }

    /// `read` applied to this object, its refusal turned into the deserializer's error.
    pub(crate) fn read<T, E: de::Error>(self, read: impl FnOnce(Object) -> Result<T, Wrong>) -> Result<T, E> {
        read(self).map_err(E::custom)
    }
}

impl From<Map<String, Value>> for Object {
    fn from(members: Map<String, Value>) -> Object {
        Object { members, taken: Vec::new() }
    }
}

/// Reads a value, refusing a member twice in any object within it.
struct Strict;

impl<'de> Visitor<'de> for Strict {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Strict)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(StrictValue(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut members = Map::new();
        while let Some(name) = map.next_key::<String>()? {
            if members.contains_key(&name) {
                return Err(de::Error::custom(format_args!("a member twice: `{name}`")));
            }
            let StrictValue(value) = map.next_value()?;
            members.insert(name, value);
        }
        Ok(Value::Object(members))
    }
}

struct StrictValue(Value);

impl<'de> Deserialize<'de> for StrictValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(Strict).map(StrictValue)
    }
}

impl<'de> Deserialize<'de> for Object {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(Strict)? {
            Value::Object(map) => Ok(Object::from(map)),
            _ => Err(de::Error::custom("expected a JSON object")),
        }
    }
}

#[cfg(test)]
#[expect(clippy::unwrap_used, reason = "a test fails loudly")]
mod tests {
    use super::*;

    #[test]
    fn members_twice_are_refused_at_every_depth() {
        assert!(Object::parse(br#"{"a":1,"a":1}"#).is_err());
        assert!(Object::parse(br#"{"a":{"b":1,"b":2}}"#).is_err());
        assert!(Object::parse(br#"{"a":[{"b":1,"b":2}]}"#).is_err());
        assert!(Object::parse(br#"[1]"#).is_err());
        let mut o = Object::parse(br#"{"s":"x","n":null,"u":7,"f":1.5,"b":true,"l":["a"],"o":{"k":"v"}}"#).unwrap();
        assert_eq!(o.string("n"), Ok(None));
        assert_eq!(o.required_string("n"), Err(Wrong("n")));
        assert_eq!(o.u64("f"), Err(Wrong("f")));
        assert_eq!(o.u64("u"), Ok(Some(7)));
        assert_eq!(o.string("b"), Err(Wrong("b")));
        assert_eq!(o.strings("l"), Ok(Some(vec!["a".to_owned()])));
        assert_eq!(o.object("o").unwrap().unwrap().string("k"), Ok(Some("v".to_owned())));
        assert_eq!(o.rest().len(), 1, "only `s` is left");
    }

    #[test]
    fn deep_nesting_is_refused_not_followed() {
        let deep = format!("{{\"a\":{}{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(Object::parse(deep.as_bytes()).is_err());
        let fine = format!("{{\"a\":{}{}}}", "[".repeat(100), "]".repeat(100));
        assert!(Object::parse(fine.as_bytes()).is_ok());
    }
}
