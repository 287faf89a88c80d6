//! JSON exactly as Flask's `jsonify` writes it (the accounts mock server was a Flask app):
//! keys sorted, no spaces, non-ASCII escaped as `\uXXXX`, and a trailing newline.

use std::io;

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
}
