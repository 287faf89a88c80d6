//! The CRM simulator answers as the original CRM did (see README, Compatibility notes:
//! CRM): the paginated API as Flask served it, and the ZeroMQ feed read by a real SUB socket
//! (the pyzmq peer is in tests/python).

use std::sync::Arc;
use std::time::Duration;

use workers::simulate::crm::{self, ChangeEvent, CrmRecord, CrmSettings, CrmUpstream};
use workers::stop::Stop;
use zeromq::{Socket, SocketRecv};

fn settings(records: u64) -> CrmSettings {
    CrmSettings {
        records,
        page_size: 1000,
        latency: Duration::ZERO,
        change_interval: Duration::from_millis(1),
        max_changes: Some(50),
        seed: 11,
        error_rate: 0.0,
        feed_seq: true,
    }
}

async fn serve(upstream: Arc<CrmUpstream>) -> String {
    testkit::serve(crm::router(upstream)).await
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn pages_hold_1000_records_id_descending_in_flask_format() {
    let upstream = Arc::new(CrmUpstream::new(settings(2_500)));
    let base = serve(upstream.clone()).await;
    let (status, body) = get(&format!("{base}/customers?page=1")).await;
    assert_eq!(status, 200);
    assert!(body.ends_with("]\n"));
    assert!(
        body.starts_with(r#"[{"email":["#)
            || body.starts_with(r#"[{"email":[],"firstName":null,"id":2500,"lastName":null}"#),
        "keys sorted as jsonify writes them: {}",
        &body[..80]
    );
    let page: Vec<CrmRecord> = serde_json::from_str(&body).unwrap();
    assert_eq!(page.len(), 1000);
    assert_eq!(page.first().unwrap().id, 2500);
    assert_eq!(page.last().unwrap().id, 1501);
    assert!(page.windows(2).all(|pair| pair[0].id > pair[1].id));

    let (_, third) = get(&format!("{base}/customers?page=3")).await;
    assert_eq!(
        serde_json::from_str::<Vec<CrmRecord>>(&third)
            .unwrap()
            .len(),
        500
    );
    let (status, past) = get(&format!("{base}/customers?page=4")).await;
    assert_eq!((status, past.as_str()), (200, "[]\n"));
    for default in ["", "?page=abc", "?page=1.5"] {
        let (_, body) = get(&format!("{base}/customers{default}")).await;
        let page: Vec<CrmRecord> = serde_json::from_str(&body).unwrap();
        assert_eq!(page.first().unwrap().id, 2500, "{default:?} means page 1");
    }
}

#[tokio::test]
async fn error_injection_answers_500_or_stalls() {
    let upstream = Arc::new(CrmUpstream::new(CrmSettings {
        error_rate: 1.0,
        ..settings(10)
    }));
    let base = serve(upstream).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let (mut errors, mut stalls) = (0, 0);
    for _ in 0..20 {
        match client.get(format!("{base}/customers?page=1")).send().await {
            Ok(response) => {
                assert_eq!(response.status(), 500);
                errors += 1;
            }
            Err(error) => {
                assert!(error.is_timeout(), "{error}");
                stalls += 1;
            }
        }
    }
    assert!(errors > 0 && stalls > 0, "{errors} errors, {stalls} stalls");
}

#[tokio::test]
async fn the_feed_publishes_two_frame_events_with_consecutive_seq() {
    let upstream = Arc::new(CrmUpstream::new(CrmSettings {
        max_changes: None,
        change_interval: Duration::from_millis(2),
        ..settings(200)
    }));
    let (feed, endpoint) = crm::bind_feed("tcp://127.0.0.1:0").await.unwrap();
    let mut subscriber = zeromq::SubSocket::new();
    subscriber.connect(&endpoint).await.unwrap();
    subscriber.subscribe(crm::TOPIC).await.unwrap();
    // The changes never stop, so however long the subscription takes to reach the
    // publisher (ZeroMQ's slow joiner), events keep coming.
    let changes = tokio::spawn(crm::run_changes(upstream, feed, Stop::never()));
    let mut events = Vec::new();
    while events.len() < 50 {
        let message = tokio::time::timeout(Duration::from_secs(20), subscriber.recv())
            .await
            .expect("an event in time")
            .unwrap();
        assert_eq!(message.len(), 2, "exactly two frames");
        assert_eq!(message.get(0).unwrap().as_ref(), b"dataChanges");
        let event: ChangeEvent = serde_json::from_slice(message.get(1).unwrap()).unwrap();
        events.push(event);
    }
    changes.abort();
    let first = events[0].seq;
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    assert_eq!(
        seqs,
        (first..first + 50).collect::<Vec<_>>(),
        "a gap on a local feed"
    );
    for event in &events {
        match event.event_type.as_str() {
            "DELETE" => assert_eq!(
                event.data.as_object().unwrap().keys().collect::<Vec<_>>(),
                ["id"]
            ),
            "CREATE" | "UPDATE" => {
                serde_json::from_value::<CrmRecord>(event.data.clone()).unwrap();
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test]
async fn changes_stop_at_max_changes_so_the_upstream_goes_quiet() {
    let upstream = Arc::new(CrmUpstream::new(settings(200)));
    let (feed, _) = crm::bind_feed("tcp://127.0.0.1:0").await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        crm::run_changes(upstream.clone(), feed, Stop::never()),
    )
    .await
    .expect("the change loop ends by itself")
    .unwrap();
    assert_eq!(upstream.last_seq(), 50);
}

#[tokio::test]
async fn feed_seq_false_publishes_exactly_the_originals_frames() {
    let feed_port = testkit::free_port();
    let _simulator = testkit::Launch::binary("workers")
        .args(["simulate", "--only", "crm", "--feed-seq", "false"])
        .env("CRM_ADDR", format!("127.0.0.1:{}", testkit::free_port()))
        .env("CRM_ZMQ_BIND", format!("tcp://127.0.0.1:{feed_port}"))
        .env("CRM_RECORDS", "100")
        .env("CRM_CHANGE_INTERVAL_MS", "5")
        .start()
        .await;
    let mut subscriber = zeromq::SubSocket::new();
    let endpoint = format!("tcp://127.0.0.1:{feed_port}");
    // The simulator binds its feed a moment after it starts.
    let started = std::time::Instant::now();
    while subscriber.connect(&endpoint).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no feed on {endpoint}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    subscriber.subscribe(crm::TOPIC).await.unwrap();
    for _ in 0..20 {
        let message = tokio::time::timeout(Duration::from_secs(20), subscriber.recv())
            .await
            .expect("an event in time")
            .unwrap();
        assert_eq!(message.len(), 2, "exactly two frames");
        assert_eq!(message.get(0).unwrap().as_ref(), b"dataChanges");
        let event: serde_json::Value = serde_json::from_slice(message.get(1).unwrap()).unwrap();
        let mut keys: Vec<&str> = event
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["data", "eventType"], "{event}");
    }
}
