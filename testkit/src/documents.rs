//! GraphQL documents an attacker would send, shared by the gateway's unit tests, its abuse
//! suite and its limits benchmark.

/// `query { ...F0 }` where each of `levels` fragments selects `customers(first: 1) {
/// totalCount }` and spreads the next one twice: under 2 KB for 30 levels, billions of
/// fields once expanded.
pub fn fragment_dag(levels: usize) -> String {
    let mut query = String::from("query { ...F0 }\n");
    for level in 0..levels {
        query.push_str(&format!(
            "fragment F{level} on Query {{ customers(first: 1) {{ totalCount }} ...F{next} ...F{next} }}\n",
            next = level + 1
        ));
    }
    query.push_str(&format!("fragment F{levels} on Query {{ __typename }}\n"));
    query
}
