//! `GET /search?q=&page=`, the CRM apps' own search route, on PostgreSQL (Meilisearch's
//! path is the same handler over `MeiliSearch::crm_page`): its envelope, 100 hits a page id
//! descending, an empty query listing everything, pages read as the original read them,
//! and errors in the original's `{"error", "detail"}` shape.

use crate::common::TestGateway;

use domain::crm::{apply_changes, Change, CrmRecord};
use serde_json::{json, Value};
use sqlx::PgPool;

/// 250 CRM records: ids 1..=250, "Smith" on every third, and id 7 with nothing to search.
async fn seed(pool: &PgPool) {
    let changes: Vec<(u64, Change)> = (1..=250u64)
        .map(|id| {
            let record = if id == 7 {
                CrmRecord {
                    email: Vec::new(),
                    first_name: None,
                    id,
                    last_name: None,
                }
            } else {
                let last = if id % 3 == 0 { "Smith" } else { "Jones" };
                CrmRecord {
                    email: vec![format!("c{id}@example.com")],
                    first_name: (id % 2 == 0).then(|| "Ann".to_owned()),
                    id,
                    last_name: Some(last.to_owned()),
                }
            };
            (1, Change::Upsert(record))
        })
        .collect();
    apply_changes(pool, &changes, 1).await.unwrap();
}

fn ids(body: &Value) -> Vec<u64> {
    body["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|hit| hit["id"].as_u64().unwrap())
        .collect()
}

#[sqlx::test(migrations = "../migrations")]
async fn search_pages_matches_by_id_descending_in_the_originals_envelope(pool: PgPool) {
    seed(&pool).await;
    let gateway = TestGateway::start(pool).await;

    let (status, body) = gateway.get("/search?q=smith&page=1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["query"], "smith");
    assert_eq!(body["page"], 1);
    let expected: Vec<u64> = (1..=250).rev().filter(|id| id % 3 == 0).collect();
    assert_eq!(ids(&body), expected[..83]);
    // A hit is the index document: null names as "", emails as a list.
    let hit = &body["results"][0];
    assert_eq!(
        hit,
        &json!({"id": 249, "firstName": "", "lastName": "Smith", "email": ["c249@example.com"]})
    );

    // An empty query lists everything searchable, 100 a page; id 7 has nothing to search.
    let (_, first) = gateway.get("/search?q=").await;
    assert_eq!(first["page"], 1);
    assert_eq!(ids(&first), (151..=250).rev().collect::<Vec<_>>());
    let (_, third) = gateway.get("/search?page=3").await;
    let listed: Vec<u64> = (1..=50).rev().filter(|id| *id != 7).collect();
    assert_eq!(ids(&third), listed);
    let (_, past) = gateway.get("/search?q=&page=4").await;
    assert_eq!(ids(&past), Vec::<u64>::new());

    // `page` that is no positive integer is page 1, and is answered as 1.
    for page in ["0", "-1", "two", ""] {
        let (status, body) = gateway.get(&format!("/search?q=smith&page={page}")).await;
        assert_eq!((status, body["page"].clone()), (200, json!(1)), "{page:?}");
    }
    // The query is answered as given.
    let (_, body) = gateway.get("/search?q=Ann%20SMITH").await;
    assert_eq!(body["query"], "Ann SMITH");
    assert!(ids(&body).iter().all(|id| id % 6 == 0), "{body}");
}

#[sqlx::test(migrations = "../migrations")]
async fn search_errors_have_the_originals_shape(pool: PgPool) {
    let gateway = TestGateway::start(pool).await;
    let long = "a".repeat(201);
    let (status, body) = gateway.get(&format!("/search?q={long}")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "Bad query");
    assert!(body["detail"].as_str().unwrap().contains("200"), "{body}");
    let response = reqwest::Client::new()
        .post(gateway.url("/search"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 405);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"], "Method Not Allowed", "{body}");
}
