//! GraphQL global ids as the gateway issues them: unpadded base64url of `Type:key`
//! (`Customer:SHOP:1`, `Order:42`), so tests can name objects without a lookup.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The global id of `type_name` with natural key `key`: base64url (no padding) of `Type:key`.
pub fn global_id(type_name: &str, key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{type_name}:{key}"))
}

/// A customer's global id from its source (`ACCOUNTS`, `CRM`, `SHOP`) and external id.
pub fn customer_id(source: &str, external_id: &str) -> String {
    global_id("Customer", &format!("{source}:{external_id}"))
}

/// An order's global id.
pub fn order_id(id: i64) -> String {
    global_id("Order", &id.to_string())
}

/// Base64url-encodes any text: for ids and cursors a test forges on purpose.
pub fn encode(text: &str) -> String {
    URL_SAFE_NO_PAD.encode(text)
}

/// The text inside a global id or cursor (`Customer:SHOP:1`); panics if it is not one.
pub fn decode(id: &str) -> String {
    let bytes = URL_SAFE_NO_PAD
        .decode(id)
        .unwrap_or_else(|error| panic!("{id:?} is not base64url: {error}"));
    String::from_utf8(bytes).unwrap_or_else(|_| panic!("{id:?} does not hold text"))
}
