//! What Flask did for the simulated upstreams (both were Flask apps): JSON exactly as
//! `jsonify` writes it (keys sorted, no spaces, non-ASCII escaped as `\uXXXX`; the caller
//! adds the trailing newline) and integer query parameters read as
//! `request.args.get(name, default, type=int)` reads them.

use std::io;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter};

/// Compact formatter that escapes every non-ASCII character, as Python's
/// `json.dumps(ensure_ascii=True)` does.
struct AsciiFormatter;

impl Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        for character in fragment.chars() {
            if character.is_ascii() {
                writer.write_all(&[character as u8])?;
            } else {
                let mut units = [0u16; 2];
                for unit in character.encode_utf16(&mut units) {
                    write!(writer, "\\u{unit:04x}")?;
                }
            }
        }
        Ok(())
    }

    fn write_char_escape<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        escape: serde_json::ser::CharEscape,
    ) -> io::Result<()> {
        CompactFormatter.write_char_escape(writer, escape)
    }
}

/// Serializes `value` without the trailing newline. Map keys come out sorted when the
/// value is a `serde_json::Value` (its maps are ordered by key).
pub fn to_string(value: &impl Serialize) -> String {
    let mut buffer = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut buffer, AsciiFormatter);
    value
        .serialize(&mut serializer)
        .expect("JSON values always serialize");
    String::from_utf8(buffer).expect("the formatter writes ASCII only")
}

/// A JSON response as Flask sends it: `application/json`, body plus a newline.
pub fn response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body + "\n",
    )
        .into_response()
}

/// The first `name` value read as Python's `int()` would (surrounding spaces and a sign
/// allowed); `None` when absent or not an integer, so the caller falls back to its default
/// as Flask does. Integers too large for 64 bits saturate.
pub fn query_int(params: &[(String, String)], name: &str) -> Option<i64> {
    let text = params.iter().find(|(key, _)| key == name)?.1.trim();
    let (negative, digits) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    let magnitude = digits.parse::<i64>().unwrap_or(i64::MAX);
    Some(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_ascii_is_escaped_like_python() {
        let value = serde_json::json!({"b": "José 😀", "a": 1.0, "c": [0.0, 1250.5]});
        // Python: json.dumps(v, sort_keys=True, separators=(",", ":"))
        assert_eq!(
            to_string(&value),
            r#"{"a":1.0,"b":"Jos\u00e9 \ud83d\ude00","c":[0.0,1250.5]}"#
        );
    }
    #[test]
    fn query_integers_follow_python_int() {
        let params = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            query_int(&params(&[("page", "2"), ("limit", "5")]), "limit"),
            Some(5)
        );
        assert_eq!(query_int(&params(&[("page", " 2 ")]), "page"), Some(2));
        assert_eq!(query_int(&params(&[("page", "+3")]), "page"), Some(3));
        assert_eq!(query_int(&params(&[("page", "-3")]), "page"), Some(-3));
        assert_eq!(query_int(&params(&[("page", "abc")]), "page"), None);
        assert_eq!(query_int(&params(&[("page", "1.5")]), "page"), None);
        assert_eq!(query_int(&params(&[("page", "")]), "page"), None);
        assert_eq!(query_int(&params(&[("limit", "5")]), "page"), None);
        assert_eq!(
            query_int(&params(&[("page", "99999999999999999999999")]), "page"),
            Some(i64::MAX)
        );
        assert_eq!(
            query_int(&params(&[("page", "7"), ("page", "9")]), "page"),
            Some(7)
        );
    }
}
