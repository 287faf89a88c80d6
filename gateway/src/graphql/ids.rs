//! Global object ids and pagination cursors: opaque base64url strings over the natural key
//! (`Customer:ACCOUNTS:CUST001`), stable across databases and re-ingests.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use domain::customers::CustomerKey;

use crate::errors::{ApiError, ErrorKind};

/// The decoded form of a global `ID`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GlobalId {
    /// A customer by natural key.
    Customer(CustomerKey),
    /// An order by id.
    Order(i64),
    /// A purchase by id.
    Purchase(i64),
}

impl GlobalId {
    /// The opaque id clients see.
    pub fn encode(&self) -> String {
        match self {
            Self::Customer(key) => URL_SAFE_NO_PAD.encode(format!("Customer:{}", key_text(key))),
            Self::Order(id) => URL_SAFE_NO_PAD.encode(format!("Order:{id}")),
            Self::Purchase(id) => URL_SAFE_NO_PAD.encode(format!("Purchase:{id}")),
        }
    }

    /// Reads an id this API issued; anything else is an `INVALID_ID` error.
    pub fn decode(id: &str) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::new(
                ErrorKind::InvalidId,
                format!("malformed id {id:?}: expected an id returned by this API"),
            )
        };
        let text = decode_text(id).ok_or_else(invalid)?;
        let (type_name, rest) = text.split_once(':').ok_or_else(invalid)?;
        match type_name {
            "Customer" => parse_key(rest).map(Self::Customer).ok_or_else(invalid),
            "Order" => positive(rest).map(Self::Order).ok_or_else(invalid),
            "Purchase" => positive(rest).map(Self::Purchase).ok_or_else(invalid),
            _ => Err(invalid()),
        }
    }
}

/// A row id: a positive integer.
fn positive(text: &str) -> Option<i64> {
    text.parse().ok().filter(|id| *id > 0)
}

impl GlobalId {
    /// Reads a customer's id; any other id is `INVALID_ID`.
    pub fn decode_customer(id: &str) -> Result<CustomerKey, ApiError> {
        match Self::decode(id)? {
            Self::Customer(key) => Ok(key),
            _ => Err(ApiError::new(
                ErrorKind::InvalidId,
                format!("{id:?} is not a customer id"),
            )),
        }
    }

    /// Reads an order's id; any other id is `INVALID_ID`.
    pub fn decode_order(id: &str) -> Result<i64, ApiError> {
        match Self::decode(id)? {
            Self::Order(order_id) => Ok(order_id),
            _ => Err(ApiError::new(
                ErrorKind::InvalidId,
                format!("{id:?} is not an order id"),
            )),
        }
    }
}

/// The cursor of a customer in a connection ordered by natural key.
pub fn customer_cursor(key: &CustomerKey) -> String {
    URL_SAFE_NO_PAD.encode(key_text(key))
}

/// Reads a cursor made by [`customer_cursor`]; anything else is `BAD_USER_INPUT`.
pub fn decode_customer_cursor(cursor: &str) -> Result<CustomerKey, ApiError> {
    decode_text(cursor)
        .as_deref()
        .and_then(parse_key)
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::BadUserInput,
                format!("malformed cursor {cursor:?}"),
            )
        })
}

fn key_text(key: &CustomerKey) -> String {
    format!("{}:{}", key.source, key.external_id)
}

fn parse_key(text: &str) -> Option<CustomerKey> {
    let (source, external_id) = text.split_once(':')?;
    if external_id.is_empty() {
        return None;
    }
    Some(CustomerKey {
        source: source.parse().ok()?,
        external_id: external_id.to_owned(),
    })
}

fn decode_text(encoded: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(encoded.trim_end_matches('=')).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::customers::CustomerSource;

    fn key(external_id: &str) -> CustomerKey {
        CustomerKey {
            source: CustomerSource::Accounts,
            external_id: external_id.into(),
        }
    }

    #[test]
    fn ids_round_trip_even_with_colons_in_the_external_id() {
        for external_id in ["CUST001", "a:b:c", "ünïcode"] {
            let id = GlobalId::Customer(key(external_id));
            assert_eq!(GlobalId::decode(&id.encode()).unwrap(), id);
        }
    }

    #[test]
    fn foreign_ids_are_invalid() {
        // "Customer", "Customer:FOO:1", "Order:x", "Order:0", "Invoice:1"
        for bad in [
            "",
            "???",
            "Q3VzdG9tZXI",
            "Q3VzdG9tZXI6Rk9POjE",
            "T3JkZXI6eA",
            "T3JkZXI6MA",
            "SW52b2ljZTox",
        ] {
            let error = GlobalId::decode(bad).unwrap_err();
            assert_eq!(error.kind, ErrorKind::InvalidId, "{bad}");
        }
    }

    #[test]
    fn order_ids_round_trip() {
        let id = GlobalId::Order(42);
        assert_eq!(GlobalId::decode(&id.encode()).unwrap(), id);
    }

    #[test]
    fn cursors_round_trip() {
        let k = key("CUST010");
        assert_eq!(decode_customer_cursor(&customer_cursor(&k)).unwrap(), k);
        assert_eq!(
            decode_customer_cursor("nope!").unwrap_err().kind,
            ErrorKind::BadUserInput
        );
    }
}
