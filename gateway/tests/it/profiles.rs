//! User profiles in GraphQL: `userProfiles` filtered and paged, `userProfile(id:)`, the
//! profile as a customer of source `PROFILES`, and `Customer.matches` across sources.

use crate::common::{self, TestGateway};
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

fn change(id: u128, email: &str, mobile: &str, status: &str, second: u32) -> Value {
    json!({
        "id": Uuid::from_u128(id).to_string(),
        "name": format!("User{id}"),
        "email": email,
        "mobile": mobile,
        "status": status,
        "last_updated_at": format!("2025-07-01T10:00:{second:02}Z"),
    })
}

/// Applies one batch as `workers sync` does.
async fn sync_batch(pool: &PgPool, batch: Value) {
    let changes = domain::profiles::decode_batch(batch.to_string().as_bytes()).unwrap();
    domain::profiles::apply_batch(pool, chrono::Utc::now(), &changes)
        .await
        .unwrap();
}

const PROFILES: &str = r#"query($status: String, $syncStatus: ProfileSyncStatus, $first: Int, $after: String) {
  userProfiles(status: $status, syncStatus: $syncStatus, first: $first, after: $after) {
    totalCount
    pageInfo { hasNextPage endCursor }
    edges { node { id name email mobile status syncStatus syncMessage accepted } }
  }
}"#;

#[sqlx::test(migrations = "../migrations")]
async fn profiles_are_listed_by_outcome_and_status_page_by_page(pool: PgPool) {
    sync_batch(
        &pool,
        json!([
            change(1, "a@example.com", "+911", "active", 1),
            change(2, "b@example.com", "+912", "pending", 2),
            change(3, "a@example.com", "+913", "active", 3),
            change(4, "bad", "+914", "active", 4),
            change(5, "e@example.com", "+915", "inactive", 5),
        ]),
    )
    .await;
    let gateway = TestGateway::start(pool).await;

    let conflicts = gateway
        .graphql(PROFILES, json!({"syncStatus": "CONFLICT"}))
        .await;
    let connection = &conflicts["data"]["userProfiles"];
    assert_eq!(connection["totalCount"], 1, "{conflicts}");
    let node = &connection["edges"][0]["node"];
    assert_eq!(node["id"], Uuid::from_u128(3).to_string());
    assert_eq!(node["accepted"], false);
    assert_eq!(
        node["syncMessage"],
        format!(
            "Email a@example.com already belongs to profile {}",
            Uuid::from_u128(1)
        )
    );

    let failed = gateway
        .graphql(PROFILES, json!({"syncStatus": "FAILED_VALIDATION"}))
        .await;
    assert_eq!(
        failed["data"]["userProfiles"]["edges"][0]["node"]["syncMessage"],
        "Invalid email format"
    );
    let active = gateway.graphql(PROFILES, json!({"status": "active"})).await;
    assert_eq!(active["data"]["userProfiles"]["totalCount"], 3, "{active}");

    // Two pages of two, then one: no profile twice, none missed.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    loop {
        let page = gateway
            .graphql(PROFILES, json!({"first": 2, "after": after}))
            .await;
        let connection = &page["data"]["userProfiles"];
        for edge in connection["edges"].as_array().unwrap() {
            seen.push(edge["node"]["id"].as_str().unwrap().to_owned());
        }
        if connection["pageInfo"]["hasNextPage"] != true {
            break;
        }
        after = connection["pageInfo"]["endCursor"].clone();
    }
    let expected: Vec<String> = (1..=5).map(|n| Uuid::from_u128(n).to_string()).collect();
    assert_eq!(seen, expected);

    let bad = gateway
        .graphql(PROFILES, json!({"after": "not-a-uuid"}))
        .await;
    assert_eq!(
        bad["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{bad}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_synced_profile_is_a_customer_matched_by_email_across_sources(pool: PgPool) {
    common::seed_accounts(&pool).await;
    // CUST001's email.
    sync_batch(
        &pool,
        json!([change(7, "john.smith@example.com", "+917", "active", 1)]),
    )
    .await;
    let gateway = TestGateway::start(pool).await;
    let query = r#"query($id: ID!) {
      userProfile(id: $id) {
        name syncStatus lastUpdatedAt
        customer { source externalId firstName emails phone
                   matches { source externalId firstName lastName } }
      }
    }"#;
    let answer = gateway
        .graphql(query, json!({"id": Uuid::from_u128(7).to_string()}))
        .await;
    let profile = &answer["data"]["userProfile"];
    assert_eq!(profile["syncStatus"], "SYNCED", "{answer}");
    assert_eq!(profile["lastUpdatedAt"], "2025-07-01T10:00:01+00:00");
    let customer = &profile["customer"];
    assert_eq!(customer["source"], "PROFILES");
    assert_eq!(customer["externalId"], Uuid::from_u128(7).to_string());
    assert_eq!(customer["firstName"], "User7");
    assert_eq!(customer["emails"], json!(["john.smith@example.com"]));
    assert_eq!(customer["phone"], "+917");
    assert_eq!(
        customer["matches"],
        json!([{"source": "ACCOUNTS", "externalId": "CUST001", "firstName": "John", "lastName": "Smith"}])
    );

    // And the other way: the accounts customer finds the profile.
    let accounts = gateway
        .graphql(
            r#"query($id: ID!) { customer(id: $id) { matches { source externalId } } }"#,
            json!({"id": testkit::customer_id("ACCOUNTS", "CUST001")}),
        )
        .await;
    assert_eq!(
        accounts["data"]["customer"]["matches"],
        json!([{"source": "PROFILES", "externalId": Uuid::from_u128(7).to_string()}]),
        "{accounts}"
    );

    let missing = gateway
        .graphql(query, json!({"id": Uuid::from_u128(99).to_string()}))
        .await;
    assert_eq!(missing["data"]["userProfile"], Value::Null);
    let malformed = gateway.graphql(query, json!({"id": "42"})).await;
    assert_eq!(
        malformed["errors"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{malformed}"
    );
}

#[sqlx::test(migrations = "../migrations")]
async fn a_profile_customer_has_the_purchases_of_its_name_and_others_have_none(pool: PgPool) {
    common::seed_accounts(&pool).await;
    sync_batch(
        &pool,
        json!([change(7, "user7@example.com", "+917", "active", 1)]),
    )
    .await;
    let gateway = TestGateway::start(pool).await;
    for (username, price) in [("User7", "10.50"), ("User8", "3.00"), ("User7", "2.25")] {
        let (status, body) = testkit::http::post_json(
            &gateway.url("/buy"),
            &json!({"username": username, "userid": "7", "price": price,
                    "timestamp": "2024-05-31T15:54:32.204Z"}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let query = r#"query($id: ID!, $after: String) {
      customer(id: $id) {
        purchases(first: 1, after: $after) {
          totalCount pageInfo { hasNextPage endCursor } nodes { username price }
        }
      }
    }"#;
    let profile = testkit::customer_id("PROFILES", &Uuid::from_u128(7).to_string());
    let first = gateway.graphql(query, json!({"id": profile})).await;
    let page = &first["data"]["customer"]["purchases"];
    assert_eq!(page["totalCount"], 2, "{first}");
    assert_eq!(
        page["nodes"],
        json!([{"username": "User7", "price": "10.50"}])
    );
    assert_eq!(page["pageInfo"]["hasNextPage"], true);
    let next = gateway
        .graphql(
            query,
            json!({"id": profile, "after": page["pageInfo"]["endCursor"]}),
        )
        .await;
    let page = &next["data"]["customer"]["purchases"];
    assert_eq!(
        page["nodes"],
        json!([{"username": "User7", "price": "2.25"}]),
        "{next}"
    );
    assert_eq!(page["pageInfo"]["hasNextPage"], false);

    let accounts = gateway
        .graphql(
            query,
            json!({"id": testkit::customer_id("ACCOUNTS", "CUST001")}),
        )
        .await;
    let page = &accounts["data"]["customer"]["purchases"];
    assert_eq!(page["totalCount"], 0, "{accounts}");
    assert_eq!(page["nodes"], json!([]));
}
