//! Purchases in GraphQL: the `Purchase` type, `purchases(username:)` (oldest first, a Relay
//! connection), `recordPurchase`, which records exactly what `POST /buy` records, and the
//! resumable `purchaseMade` subscription, read from the Kafka topic (see
//! `crate::purchase_feed`).

use async_graphql::connection::Connection;
use async_graphql::{Context, InputObject, Object, Subscription, ID};
use chrono::{DateTime, Utc};
use domain::purchases::NewPurchase;
use futures_util::{Stream, StreamExt};
use rust_decimal::Decimal;

use super::ids::GlobalId;
use crate::errors::IntoGraphql;
use crate::purchase_feed::{Cursor, FeedEvent};
use crate::AppState;

/// A purchase of the shop's customer management system.
pub struct Purchase(pub domain::purchases::Purchase);

#[Object]
impl Purchase {
    /// Global id, usable with `node(id:)`.
    pub async fn id(&self) -> ID {
        ID(GlobalId::Purchase(self.0.id).encode())
    }

    /// Who bought.
    async fn username(&self) -> &str {
        &self.0.username
    }

    /// The buyer's user id, as sent (`"005"`).
    async fn userid(&self) -> &str {
        &self.0.userid
    }

    /// What it cost, exact to the cent.
    async fn price(&self) -> Decimal {
        self.0.price
    }

    /// When it was bought.
    async fn timestamp(&self) -> DateTime<Utc> {
        self.0.purchased_at
    }
}

/// Input of `recordPurchase`: the four fields of `POST /buy`.
#[derive(InputObject)]
pub struct RecordPurchaseInput {
    /// Who buys (1 to 64 characters).
    username: String,
    /// The buyer's user id (1 to 64 characters).
    userid: String,
    /// What it costs (>= 0, at most 2 decimal places).
    price: Decimal,
    /// When it was bought (RFC 3339).
    timestamp: DateTime<Utc>,
}

/// Fields of the purchases connection beside edges and pageInfo.
pub struct PurchaseConnectionFields {
    username: String,
}

#[Object]
impl PurchaseConnectionFields {
    /// How many purchases the user has, across all pages.
    async fn total_count(&self, ctx: &Context<'_>) -> async_graphql::Result<i64> {
        let state = ctx.data_unchecked::<AppState>();
        domain::purchases::count_for_user(&state.pool, &self.username)
            .await
            .graphql()
    }
}

#[derive(Default)]
pub struct PurchaseQuery;

#[Object]
impl PurchaseQuery {
    /// A user's purchases, oldest first.
    async fn purchases(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Whose purchases.")] username: String,
        #[graphql(desc = "Page size, 0 to 100 (default 20).")] first: Option<i32>,
        #[graphql(desc = "The `endCursor` of the previous page.")] after: Option<String>,
    ) -> async_graphql::Result<Connection<String, Purchase, PurchaseConnectionFields>> {
        purchases_page(ctx, username, first, after).await
    }
}

/// One page of a user's purchases, oldest first: `Query.purchases` and `Customer.purchases`.
pub(super) async fn purchases_page(
    ctx: &Context<'_>,
    username: String,
    first: Option<i32>,
    after: Option<String>,
) -> async_graphql::Result<Connection<String, Purchase, PurchaseConnectionFields>> {
    let first = super::page_size(first)?;
    let after_id = super::row_cursor(after.as_deref())?;
    let state = ctx.data_unchecked::<AppState>();
    let rows = domain::purchases::for_user(&state.pool, &username, after_id, first as i64 + 1)
        .await
        .graphql()?;
    Ok(super::page(
        rows,
        first,
        after_id.is_some(),
        PurchaseConnectionFields { username },
        |purchase| (purchase.id.to_string(), Purchase(purchase)),
    ))
}

#[derive(Default)]
pub struct PurchaseMutation;

#[Object]
impl PurchaseMutation {
    /// Records a purchase, as `POST /buy` does: stored with its event in one transaction;
    /// the relay publishes it to Kafka.
    async fn record_purchase(
        &self,
        ctx: &Context<'_>,
        input: RecordPurchaseInput,
    ) -> async_graphql::Result<Purchase> {
        let purchase =
            NewPurchase::new(&input.username, &input.userid, input.price, input.timestamp)
                .graphql()?;
        let state = ctx.data_unchecked::<AppState>();
        let origin = super::handler::request_origin(ctx);
        let stored = domain::purchases::record(
            &state.pool,
            &state.purchases_destination(),
            &purchase,
            Some(&origin),
        )
        .await
        .graphql()?;
        Ok(Purchase(stored))
    }
}

/// A purchase as it passed through the Kafka topic, with the cursor that resumes after it.
pub struct PurchaseMade(FeedEvent);

#[Object]
impl PurchaseMade {
    /// Pass it as `after:` to resume right after this purchase (from any gateway).
    async fn cursor(&self) -> &str {
        &self.0.cursor
    }

    /// Who bought.
    async fn username(&self) -> &str {
        self.0.purchase.username()
    }

    /// The buyer's user id.
    async fn userid(&self) -> &str {
        self.0.purchase.userid()
    }

    /// What it cost, exact to the cent.
    async fn price(&self) -> Decimal {
        self.0.purchase.price()
    }

    /// When it was bought.
    async fn timestamp(&self) -> DateTime<Utc> {
        self.0.purchase.purchased_at()
    }
}

#[derive(Default)]
pub struct PurchaseSubscription;

#[Subscription]
impl PurchaseSubscription {
    /// Every purchase as it passes through Kafka (optionally only one user's). With
    /// `after:` (a `cursor` received earlier), first every purchase since that one, then
    /// the live ones: no gap, no duplicate, whichever gateway serves the reconnect. A cursor
    /// older than the topic's retention is a `CURSOR_EXPIRED` error.
    async fn purchase_made(
        &self,
        ctx: &Context<'_>,
        #[graphql(desc = "Only this user's purchases.")] username: Option<String>,
        #[graphql(desc = "Resume after the purchase that carried this cursor.")] after: Option<
            String,
        >,
    ) -> async_graphql::Result<impl Stream<Item = async_graphql::Result<PurchaseMade>>> {
        let after = after.as_deref().map(Cursor::decode).transpose()?;
        let state = ctx.data_unchecked::<AppState>();
        Ok(state
            .purchase_feed
            .follow(username, after)
            .map(|event| event.map(PurchaseMade).map_err(async_graphql::Error::from)))
    }
}
