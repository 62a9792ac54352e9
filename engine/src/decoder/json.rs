//! Wazuh's `JSON_Decoder` plugin: every key of a JSON object in `log`
//! becomes a field, nested keys joined with dots (`alert.severity`).
//! Static field names (`srcip`, `user`, ...) fill the static fields, as
//! Wazuh's `fillData` does; arrays keep their JSON text as cJSON's
//! formatted printer writes it (`["a", "b"]`, objects inside with tabs and
//! newlines: rules match on that spelling, e.g. `"granted":\strue`);
//! numbers and booleans their JSON spelling; `null` as the decoder's
//! `json_null_field` says.
//!
//! The input is the attacker's: text that is not a JSON object decodes
//! nothing, and nesting beyond `serde_json`'s recursion limit is refused
//! by the parser, so the walk below is bounded.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

use super::JsonNull;
use crate::dialect::RulesetDialect;
use crate::event::{Event, FieldName};

/// A JSON value with its object keys in document order (cJSON keeps that
/// order, and rules match on the printed text of arrays).
enum Node {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Node>),
    Object(Vec<(String, Node)>),
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node, E> {
        Ok(Node::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node, E> {
        Ok(Node::Number(v.into()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Node::Null, Node::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node, E> {
        Ok(Node::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Node, E> {
        Ok(Node::String(v))
    }
    fn visit_unit<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_none<E>(self) -> Result<Node, E> {
        Ok(Node::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut entries = Vec::new();
        while let Some((k, v)) = map.next_entry::<String, Node>()? {
            entries.push((k, v));
        }
        Ok(Node::Object(entries))
    }
}

/// Decodes the JSON object starting at `start` (a byte offset into `log`,
/// leading spaces skipped) into `event`'s fields; trailing text after the
/// object is ignored, as cJSON's parser ignores it. Returns the
/// (label, value) pairs assigned, in document order, for logtest.
pub(crate) fn decode(event: &mut Event, start: usize, nulls: JsonNull) -> Vec<(String, String)> {
    let log = event.log();
    let text = log.get(start..).unwrap_or_default();
    let text = text.trim_ascii_start();
    if text.first() != Some(&b'{') {
        return Vec::new();
    }
    let mut stream = serde_json::Deserializer::from_slice(text).into_iter::<Node>();
    let Some(Ok(Node::Object(entries))) = stream.next() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in &entries {
        flatten(k.clone(), v, nulls, &mut out);
    }
    for (k, v) in &out {
        event
            .fields
            .set(&FieldName::parse_in(k, RulesetDialect::Wazuh), v.clone());
    }
    out
}

fn flatten(key: String, v: &Node, nulls: JsonNull, out: &mut Vec<(String, String)>) {
    match v {
        Node::Object(entries) => {
            for (k, inner) in entries {
                flatten(format!("{key}.{k}"), inner, nulls, out);
            }
        }
        Node::Null => match nulls {
            JsonNull::Discard => {}
            JsonNull::Empty => out.push((key, String::new())),
            JsonNull::String => out.push((key, "null".into())),
        },
        Node::String(s) => out.push((key, s.clone())),
        Node::Bool(b) => out.push((key, b.to_string())),
        Node::Number(n) => out.push((key, n.to_string())),
        Node::Array(_) => {
            let mut text = String::new();
            cjson_print(v, 0, &mut text);
            out.push((key, text));
        }
    }
}

/// cJSON's formatted printer (`cJSON_Print`): arrays on one line with
/// `", "` between items, objects with a newline after `{`, one tab per
/// depth before each key, a tab after each colon.
fn cjson_print(v: &Node, depth: usize, out: &mut String) {
    match v {
        Node::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                cjson_print(item, depth + 1, out);
            }
            out.push(']');
        }
        Node::Object(entries) => {
            let depth = depth + 1;
            out.push_str("{\n");
            for (i, (k, item)) in entries.iter().enumerate() {
                out.extend(std::iter::repeat_n('\t', depth));
                out.push_str(&serde_json::Value::String(k.clone()).to_string());
                out.push_str(":\t");
                cjson_print(item, depth, out);
                if i + 1 < entries.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.extend(std::iter::repeat_n('\t', depth - 1));
            out.push('}');
        }
        Node::Null => out.push_str("null"),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Number(n) => out.push_str(&n.to_string()),
        Node::String(s) => out.push_str(&serde_json::Value::String(s.clone()).to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(log: &str) -> Event {
        Event {
            full_log: log.as_bytes().to_vec(),
            ..Event::default()
        }
    }

    #[test]
    fn nested_keys_arrays_and_static_fields() {
        let mut e = ev(
            r#"{"srcip":"10.0.0.1","alert":{"severity":2,"ok":true,"n":null},"tags":["a","b"]} trailing"#,
        );
        let got = decode(&mut e, 0, JsonNull::Discard);
        assert_eq!(e.fields.srcip.as_deref(), Some("10.0.0.1"));
        assert_eq!(e.fields.get(&FieldName::parse("alert.severity")), Some("2"));
        assert_eq!(e.fields.get(&FieldName::parse("alert.ok")), Some("true"));
        assert_eq!(e.fields.get(&FieldName::parse("alert.n")), None);
        assert_eq!(
            e.fields.get(&FieldName::parse("tags")),
            Some(r#"["a", "b"]"#)
        );
        assert_eq!(got.len(), 4);
        let mut e = ev(r#"{"n":null}"#);
        decode(&mut e, 0, JsonNull::Empty);
        assert_eq!(e.fields.get(&FieldName::parse("n")), Some(""));
    }

    #[test]
    fn arrays_print_as_cjson_formats_them() {
        let mut e = ev(r#"{"a":[{"r":"x","g":true,"e":{}}],"n":[1,2.5]}"#);
        decode(&mut e, 0, JsonNull::Discard);
        assert_eq!(
            e.fields.get(&FieldName::parse("a")),
            Some("[{\n\t\t\"r\":\t\"x\",\n\t\t\"g\":\ttrue,\n\t\t\"e\":\t{\n\t\t}\n\t}]")
        );
        assert_eq!(e.fields.get(&FieldName::parse("n")), Some("[1, 2.5]"));
    }

    #[test]
    fn hostile_input_decodes_nothing() {
        for bad in [
            "",
            "not json",
            "{",
            r#"{"a":"#,
            "[1,2]",
            &"{\"a\":".repeat(10_000),
        ] {
            let mut e = ev(bad);
            assert!(decode(&mut e, 0, JsonNull::Discard).is_empty(), "{bad:?}");
            assert_eq!(e.fields, Default::default());
        }
        let mut e = ev("x");
        assert!(decode(&mut e, 99, JsonNull::Discard).is_empty());
    }
}
