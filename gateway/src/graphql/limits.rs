//! What a GraphQL document may cost, measured before validation runs. async-graphql's own
//! validation expands every fragment spread where it appears, so a small document of
//! fragments that each spread the next one twice makes it do exponential work; the measure
//! here resolves each fragment once (memoized, iteratively, so a long chain cannot exhaust
//! the stack) and refuses such a document in time linear in its size. The same measure is
//! the one cost model of the gateway: depth, complexity (fields as resolvers would run them,
//! with a search counted by what it really costs), aliases and root fields, each with its
//! own limit and `extensions.code`, over HTTP, batches and WebSocket alike.
//!
//! The check is an async-graphql extension ([`DocumentLimits`]) hooked on request
//! preparation, before async-graphql parses (its recursion check after parsing expands
//! spreads too), so every operation passes it, whatever transport carried it. It also refuses text no column can
//! hold (a NUL character) in arguments and variables, so such input is the client's error
//! and never reaches PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::parser::types::{ExecutableDocument, Field, Selection, SelectionSet};
use async_graphql::{Name, Request, ServerError, ServerResult, Value, Variables};

use crate::errors::{ApiError, ErrorKind};

/// Fields whose resolver costs far more than reading a column: each counts this much in the
/// complexity, not 1. A full-text search over 100,000 customers is about as costly as a few
/// hundred field reads.
const FIELD_WEIGHTS: &[(&str, u64)] = &[("searchCustomers", 500)];

/// List fields and the page size they have when `first` is not given: their selection runs
/// once per item, so it counts that many times.
const LIST_FIELDS: &[(&str, u64)] = &[
    ("customers", 20),
    ("orders", 20),
    ("purchases", 20),
    ("userProfiles", 20),
    ("searchCustomers", 20),
    ("matches", 10),
];

/// The largest page a list field gives (`first` is at most 100).
const MAX_PAGE_ITEMS: u64 = 100;

/// What a document costs, fragments expanded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DocumentCost {
    /// Fields as resolvers would run them, each weighted (1, or its [`FIELD_WEIGHTS`]),
    /// and fragment spreads (1 each); a list field's selection counts once per item of its
    /// page (`first`, or its default page size).
    pub complexity: u64,
    /// Deepest nesting of fields.
    pub depth: u64,
    /// Fields given an alias.
    pub aliases: u64,
    /// Fields at the top of the operations.
    pub root_fields: u64,
}

/// One limit of [`Limits`]: what it bounds, the variable that sets it, the error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// [`DocumentCost::depth`].
    Depth,
    /// [`DocumentCost::complexity`].
    Complexity,
    /// [`DocumentCost::aliases`].
    Aliases,
    /// [`DocumentCost::root_fields`].
    RootFields,
    /// Operations in one batch.
    BatchSize,
    /// The complexity of a batch's operations together.
    BatchComplexity,
}

impl Limit {
    /// The `extensions.code` of a refusal.
    pub fn code(self) -> &'static str {
        match self {
            Self::Depth => "DEPTH_LIMIT_EXCEEDED",
            Self::Complexity => "COMPLEXITY_LIMIT_EXCEEDED",
            Self::Aliases => "ALIAS_LIMIT_EXCEEDED",
            Self::RootFields => "ROOT_FIELD_LIMIT_EXCEEDED",
            Self::BatchSize => "BATCH_LIMIT_EXCEEDED",
            Self::BatchComplexity => "BATCH_COMPLEXITY_LIMIT_EXCEEDED",
        }
    }

    /// The environment variable that sets it.
    pub fn variable(self) -> &'static str {
        match self {
            Self::Depth => "GRAPHQL_MAX_DEPTH",
            Self::Complexity => "GRAPHQL_MAX_COMPLEXITY",
            Self::Aliases => "GRAPHQL_MAX_ALIASES",
            Self::RootFields => "GRAPHQL_MAX_ROOT_FIELDS",
            Self::BatchSize => "GRAPHQL_MAX_BATCH",
            Self::BatchComplexity => "GRAPHQL_MAX_COMPLEXITY",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Self::Depth => "query depth",
            Self::Complexity => "query complexity",
            Self::Aliases => "aliases",
            Self::RootFields => "root fields",
            Self::BatchSize => "operations in a batch",
            Self::BatchComplexity => "complexity of the batch",
        }
    }
}

/// A document or batch over one of the limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitExceeded {
    /// Which limit.
    pub limit: Limit,
    /// What the request measured.
    pub measured: u64,
    /// What the limit allows.
    pub allowed: u64,
}

impl LimitExceeded {
    /// The GraphQL error a client gets: the code names the limit, the extensions say by how
    /// much and which variable raises it.
    pub fn to_server_error(self) -> ServerError {
        let mut error = ServerError::new(
            format!(
                "{} is {}, more than the {} allowed ({})",
                self.limit.what(),
                self.measured,
                self.allowed,
                self.limit.variable()
            ),
            None,
        );
        let mut extensions = async_graphql::ErrorExtensionValues::default();
        extensions.set("code", self.limit.code());
        extensions.set("limit", self.limit.variable());
        extensions.set("measured", self.measured);
        extensions.set("allowed", self.allowed);
        error.extensions = Some(extensions);
        error
    }
}

/// Whether a request over a limit is refused, or only logged (to learn what limits real
/// traffic needs before enforcing them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LimitMode {
    /// Refuse it with an error naming the limit.
    Enforce,
    /// Run it, and log a warning saying which limit it went over.
    Measure,
}

/// The limits every document and batch meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Deepest nesting of fields.
    pub max_depth: u64,
    /// Largest complexity of one operation, and of a whole batch.
    pub max_complexity: u64,
    /// Most aliased fields in a document.
    pub max_aliases: u64,
    /// Most fields at the top of a document's operations.
    pub max_root_fields: u64,
    /// Most operations in one batch.
    pub max_batch: u64,
    /// Refuse, or only log.
    pub mode: LimitMode,
}

impl Limits {
    /// The first limit `cost` goes over, if any.
    pub fn check(&self, cost: &DocumentCost) -> Result<(), LimitExceeded> {
        let checks = [
            (Limit::Depth, cost.depth, self.max_depth),
            (Limit::Complexity, cost.complexity, self.max_complexity),
            (Limit::Aliases, cost.aliases, self.max_aliases),
            (Limit::RootFields, cost.root_fields, self.max_root_fields),
        ];
        first_exceeded(&checks)
    }

    /// The batch's own limits: its size and the sum of its operations' complexity.
    pub fn check_batch(&self, operations: u64, complexity: u64) -> Result<(), LimitExceeded> {
        let checks = [
            (Limit::BatchSize, operations, self.max_batch),
            (Limit::BatchComplexity, complexity, self.max_complexity),
        ];
        first_exceeded(&checks)
    }

    /// What to do with a request over a limit: `Err` when it is to be refused; in measure
    /// mode the refusal is logged and the request goes on.
    pub fn apply(&self, outcome: Result<(), LimitExceeded>) -> Result<(), LimitExceeded> {
        match (outcome, self.mode) {
            (Err(exceeded), LimitMode::Measure) => {
                tracing::warn!(
                    limit = exceeded.limit.variable(),
                    measured = exceeded.measured,
                    allowed = exceeded.allowed,
                    "request over a GraphQL limit; run anyway (GRAPHQL_LIMITS_MODE=measure)"
                );
                Ok(())
            }
            (outcome, _) => outcome,
        }
    }
}

fn first_exceeded(checks: &[(Limit, u64, u64)]) -> Result<(), LimitExceeded> {
    match checks
        .iter()
        .find(|(_, measured, allowed)| measured > allowed)
    {
        Some(&(limit, measured, allowed)) => Err(LimitExceeded {
            limit,
            measured,
            allowed,
        }),
        None => Ok(()),
    }
}

/// A fragment spread as a definition holds it.
#[derive(Debug, Clone, Copy)]
struct Spread<'a> {
    fragment: &'a Name,
    /// How deep in fields it appears (0: at the top).
    level: u64,
    /// How many times it runs per run of the definition: the page sizes of the list fields
    /// around it, multiplied.
    factor: u64,
}

/// What one selection set holds directly, and the fragments it spreads.
#[derive(Debug, Default)]
struct Summary<'a> {
    own: DocumentCost,
    spreads: Vec<Spread<'a>>,
}

impl<'a> Summary<'a> {
    fn of(set: &'a SelectionSet, variables: &Variables) -> Self {
        let mut summary = Self::default();
        summary.add(set, 0, 1, variables);
        summary
    }

    /// Walks one definition's own selections (nesting is bounded by the parser's recursion
    /// limit), noting spreads instead of following them. `factor` is how many times this
    /// selection set runs: a list field's selection runs once per item of its page.
    fn add(&mut self, set: &'a SelectionSet, level: u64, factor: u64, variables: &Variables) {
        for item in &set.items {
            match &item.node {
                Selection::Field(field) => {
                    let field = &field.node;
                    let cost = weight(&field.name.node).saturating_mul(factor);
                    self.own.complexity = self.own.complexity.saturating_add(cost);
                    self.own.depth = self.own.depth.max(level + 1);
                    self.own.aliases += u64::from(field.alias.is_some());
                    self.own.root_fields += u64::from(level == 0);
                    let items = page_items(field, variables);
                    self.add(
                        &field.selection_set.node,
                        level + 1,
                        factor.saturating_mul(items),
                        variables,
                    );
                }
                Selection::FragmentSpread(spread) => {
                    // A spread is work too (validation visits it): it counts 1, so a fragment
                    // of nothing but spreads cannot be free.
                    self.own.complexity = self.own.complexity.saturating_add(factor);
                    self.spreads.push(Spread {
                        fragment: &spread.node.fragment_name.node,
                        level,
                        factor,
                    });
                }
                Selection::InlineFragment(inline) => {
                    self.add(&inline.node.selection_set.node, level, factor, variables);
                }
            }
        }
    }

    /// This definition's cost with the cost of every fragment it spreads (`fragments`, as
    /// far as they are known) added where they are spread.
    fn expand(&self, fragments: &HashMap<&Name, DocumentCost>) -> DocumentCost {
        self.spreads.iter().fold(self.own, |cost, spread| {
            let fragment = fragments.get(spread.fragment).copied().unwrap_or_default();
            combine(cost, fragment, spread.level, spread.factor)
        })
    }
}

fn weight(field: &str) -> u64 {
    FIELD_WEIGHTS
        .iter()
        .find(|(name, _)| *name == field)
        .map_or(1, |(_, weight)| *weight)
}

/// How many items a field's selection runs for: its `first` (a literal or a variable; an
/// unknown variable counts the largest page), else its default page size when it is a list
/// of [`LIST_FIELDS`], else 1. Never 0: validation visits the selection anyway.
fn page_items(field: &Field, variables: &Variables) -> u64 {
    let given = field.get_argument("first").map(|first| {
        let value = first
            .node
            .clone()
            .into_const_with(|name| variables.get(&name).cloned().ok_or(()));
        match value {
            // Negative or fractional: refused by the resolver; counted as the smallest page.
            Ok(Value::Number(number)) => number.as_u64().unwrap_or(0),
            _ => MAX_PAGE_ITEMS,
        }
    });
    let default = || {
        LIST_FIELDS
            .iter()
            .find(|(name, _)| *name == field.name.node.as_str())
            .map_or(1, |(_, items)| *items)
    };
    given.unwrap_or_else(default).clamp(1, MAX_PAGE_ITEMS)
}

/// `base` with `spread`'s cost added, as seen `level` fields deep, run `factor` times.
fn combine(base: DocumentCost, spread: DocumentCost, level: u64, factor: u64) -> DocumentCost {
    DocumentCost {
        complexity: base
            .complexity
            .saturating_add(spread.complexity.saturating_mul(factor)),
        depth: base.depth.max(level.saturating_add(spread.depth)),
        aliases: base.aliases.saturating_add(spread.aliases),
        root_fields: base.root_fields.saturating_add(if level == 0 {
            spread.root_fields
        } else {
            0
        }),
    }
}

/// What `document` costs with these `variables`: every operation with its fragments
/// expanded, summed (validation walks every operation). A fragment that no operation uses,
/// or one in a cycle (both refused by validation), is measured on its own and counts when
/// it alone goes over.
pub fn measure(document: &ExecutableDocument, variables: &Variables) -> DocumentCost {
    let summaries: HashMap<&Name, Summary<'_>> = document
        .fragments
        .iter()
        .map(|(name, fragment)| {
            (
                name,
                Summary::of(&fragment.node.selection_set.node, variables),
            )
        })
        .collect();
    let fragments = resolve_fragments(&summaries);
    let operations = document
        .operations
        .iter()
        .map(|(_, operation)| {
            Summary::of(&operation.node.selection_set.node, variables).expand(&fragments)
        })
        .fold(DocumentCost::default(), |total, cost| {
            combine(total, cost, 0, 1)
        });
    // The costliest fragment on its own, so an unused or cyclic bomb is measured too.
    let worst_fragment = fragments
        .values()
        .copied()
        .max_by_key(|cost| cost.complexity)
        .unwrap_or_default();
    DocumentCost {
        complexity: operations.complexity.max(worst_fragment.complexity),
        depth: operations.depth.max(worst_fragment.depth),
        aliases: operations.aliases.max(worst_fragment.aliases),
        root_fields: operations.root_fields,
    }
}

/// Every fragment's cost with its spreads expanded, each fragment resolved once, in
/// post-order with an explicit stack. A spread of an unknown fragment, or one back into a
/// fragment still being resolved (a cycle), counts nothing.
fn resolve_fragments<'a>(
    summaries: &HashMap<&'a Name, Summary<'a>>,
) -> HashMap<&'a Name, DocumentCost> {
    let mut resolved: HashMap<&Name, DocumentCost> = HashMap::with_capacity(summaries.len());
    let mut in_progress: std::collections::HashSet<&Name> = std::collections::HashSet::new();
    for &start in summaries.keys() {
        if resolved.contains_key(start) {
            continue;
        }
        // (fragment, index of the next spread to look at)
        let mut stack: Vec<(&Name, usize)> = vec![(start, 0)];
        in_progress.insert(start);
        while let Some((name, next)) = stack.last_mut() {
            let summary = &summaries[*name];
            if let Some(spread) = summary.spreads.get(*next) {
                *next += 1;
                let fragment = spread.fragment;
                if summaries.contains_key(fragment)
                    && !resolved.contains_key(fragment)
                    && in_progress.insert(fragment)
                {
                    stack.push((fragment, 0));
                }
                continue;
            }
            let cost = summary.expand(&resolved);
            let name = *name;
            resolved.insert(name, cost);
            in_progress.remove(name);
            stack.pop();
        }
    }
    resolved
}

/// Whether a value holds a string with a NUL character, which no text column accepts.
fn holds_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::List(items) => items.iter().any(holds_nul),
        Value::Object(fields) => fields
            .iter()
            .any(|(key, value)| key.contains('\0') || holds_nul(value)),
        _ => false,
    }
}

/// Whether any argument literal of the document holds a NUL character.
fn arguments_hold_nul(document: &ExecutableDocument) -> bool {
    fn set_holds_nul(set: &SelectionSet) -> bool {
        set.items.iter().any(|item| match &item.node {
            Selection::Field(field) => {
                field.node.arguments.iter().any(|(_, value)| {
                    value
                        .node
                        .clone()
                        .into_const_with(|_| Ok::<_, std::convert::Infallible>(Value::Null))
                        .is_ok_and(|value| holds_nul(&value))
                }) || set_holds_nul(&field.node.selection_set.node)
            }
            Selection::FragmentSpread(_) => false,
            Selection::InlineFragment(inline) => set_holds_nul(&inline.node.selection_set.node),
        })
    }
    document
        .operations
        .iter()
        .any(|(_, operation)| set_holds_nul(&operation.node.selection_set.node))
        || document
            .fragments
            .values()
            .any(|fragment| set_holds_nul(&fragment.node.selection_set.node))
}

/// The refusal of NUL text: a `BAD_USER_INPUT` error as every resolver gives it, with no
/// location (it is about the request, not a place in the document).
fn nul_refused() -> ServerError {
    let error = async_graphql::Error::from(ApiError::new(
        ErrorKind::BadUserInput,
        "text must not contain a NUL character (\\u0000)",
    ));
    let mut refusal = ServerError::new(error.message, None);
    refusal.extensions = error.extensions;
    refusal
}

/// The extension that checks every parsed document against [`Limits`].
pub struct DocumentLimits(pub Limits);

impl ExtensionFactory for DocumentLimits {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(DocumentLimitsExtension(self.0))
    }
}

struct DocumentLimitsExtension(Limits);

/// Checks a request's document before async-graphql's own parsing checks and validation,
/// both of which expand fragment spreads where they appear. The document parsed here is
/// handed on, so it is parsed once; a document that does not parse is left to async-graphql,
/// which reports the syntax error.
pub fn check_request(limits: &Limits, request: &mut Request) -> ServerResult<()> {
    if request.variables.iter().any(|(_, value)| holds_nul(value))
        || request.parsed_query().is_ok_and(arguments_hold_nul)
    {
        return Err(nul_refused());
    }
    match request_cost(request) {
        None => Ok(()),
        Some(cost) => limits
            .apply(limits.check(&cost))
            .map_err(LimitExceeded::to_server_error),
    }
}

/// What `request`'s document costs with its variables (parsed once, kept for the schema);
/// `None` when it does not parse.
pub fn request_cost(request: &mut Request) -> Option<DocumentCost> {
    // The variables are set aside while the parsed document is borrowed.
    let variables = std::mem::take(&mut request.variables);
    let cost = request
        .parsed_query()
        .ok()
        .map(|document| measure(document, &variables));
    request.variables = variables;
    cost
}

#[async_graphql::async_trait::async_trait]
impl Extension for DocumentLimitsExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        check_request(&self.0, &mut request)?;
        next.run(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(query: &str) -> DocumentCost {
        measure(
            &async_graphql::parser::parse_query(query).unwrap(),
            &Variables::default(),
        )
    }

    #[test]
    fn fields_nesting_aliases_and_root_fields_are_counted() {
        let measured =
            cost("{ a: customers { totalCount } b: customers { edges { node { id } } } }");
        assert_eq!(
            measured,
            DocumentCost {
                // a: 1 + 20 x 1; b: 1 + 20 x 3 (a connection's selection runs per item).
                complexity: 21 + 61,
                depth: 4,
                aliases: 2,
                root_fields: 2,
            }
        );
    }

    #[test]
    fn fragments_count_where_they_are_spread() {
        let measured = cost(
            "{ customers { ...Page } more: customers { ...Page } } \
             fragment Page on CustomerConnection { totalCount edges { node { id } } }",
        );
        // Each `customers`: 1, then 20 times (the spread, and Page's 4 fields).
        assert_eq!(measured.complexity, 2 * (1 + 20 * (1 + 4)));
        assert_eq!(measured.depth, 4);
        assert_eq!(measured.aliases, 1);
        assert_eq!(measured.root_fields, 2);
    }

    #[test]
    fn a_search_counts_by_its_weight() {
        assert_eq!(
            cost("{ searchCustomers(query: \"x\") { __typename } }").complexity,
            500 + 20
        );
    }

    #[test]
    fn a_list_fields_selection_counts_once_per_item_of_its_page() {
        let nested = "query($n: Int) { customers(first: 100) { edges { node {
                          orders(first: $n) { id } } } } }";
        let document = async_graphql::parser::parse_query(nested).unwrap();
        let with = |value: serde_json::Value| {
            measure(
                &document,
                &Variables::from_json(serde_json::json!({ "n": value })),
            )
            .complexity
        };
        // 1 + 100 x (edges + node + orders + n x id)
        assert_eq!(with(serde_json::json!(100)), 1 + 100 * (3 + 100));
        assert_eq!(with(serde_json::json!(5)), 1 + 100 * (3 + 5));
        // An unknown page size counts the largest page; `first: 0` still counts 1 (validated).
        assert_eq!(with(serde_json::Value::Null), 1 + 100 * (3 + 100));
        assert_eq!(cost("{ customers(first: 0) { totalCount } }").complexity, 2);
        assert_eq!(
            cost("{ customers(first: 1000) { totalCount } }").complexity,
            101
        );
    }

    #[test]
    fn a_fragment_dag_is_measured_in_linear_time_at_its_expanded_cost() {
        // F30 is 1 field and F(k) = 2 fields + 2 spreads of F(k+1): F(0) = 5 * 2^30 - 4, and
        // the operation spreads it once. Measured without expanding anything (validation
        // would visit each of them).
        let measured = cost(&testkit::documents::fragment_dag(30));
        assert_eq!(measured.complexity, 5 * (1u64 << 30) - 3);
        assert_eq!(measured.depth, 2);
    }

    #[test]
    fn a_long_chain_of_fragments_does_not_exhaust_the_stack() {
        let mut query = String::from("{ ...F0 }\n");
        for level in 0..50_000 {
            query.push_str(&format!(
                "fragment F{level} on Query {{ ...F{} }}\n",
                level + 1
            ));
        }
        query.push_str("fragment F50000 on Query { __typename }\n");
        assert_eq!(cost(&query).complexity, 50_001 + 1);
    }

    #[test]
    fn a_fragment_of_nothing_but_spreads_is_not_free() {
        let mut query = String::from("{ ...F0 }\n");
        for level in 0..40 {
            query.push_str(&format!(
                "fragment F{level} on Query {{ ...F{n} ...F{n} }}\n",
                n = level + 1
            ));
        }
        query.push_str("fragment F40 on Query { __typename }\n");
        assert!(cost(&query).complexity > 1 << 40);
    }

    #[test]
    fn cycles_and_unknown_fragments_end_with_a_small_cost() {
        // Validation refuses the cycle; the measure only has to end, and stay small.
        let measured = cost(
            "{ ...A } fragment A on Query { __typename ...B ...Missing } \
             fragment B on Query { __typename ...A }",
        );
        assert!((4..=8).contains(&measured.complexity), "{measured:?}");
    }

    #[test]
    fn an_unused_fragment_bomb_is_measured_too() {
        let query =
            testkit::documents::fragment_dag(30).replace("query { ...F0 }", "query { __typename }");
        assert!(cost(&query).complexity > 1 << 30);
    }

    #[test]
    fn the_first_limit_exceeded_is_named_and_measure_mode_lets_it_through() {
        let limits = Limits {
            max_depth: 3,
            max_complexity: 10,
            max_aliases: 1,
            max_root_fields: 5,
            max_batch: 2,
            mode: LimitMode::Enforce,
        };
        let over = limits
            .check(&cost("{ a: __typename b: __typename }"))
            .unwrap_err();
        assert_eq!(
            (over.limit, over.measured, over.allowed),
            (Limit::Aliases, 2, 1)
        );
        let error = over.to_server_error();
        let extensions = error.extensions.unwrap();
        assert_eq!(
            extensions.get("code"),
            Some(&Value::from("ALIAS_LIMIT_EXCEEDED"))
        );
        assert_eq!(
            extensions.get("limit"),
            Some(&Value::from("GRAPHQL_MAX_ALIASES"))
        );
        assert_eq!(
            limits.check_batch(3, 1).unwrap_err().limit,
            Limit::BatchSize
        );
        assert_eq!(
            limits.check_batch(2, 11).unwrap_err().limit,
            Limit::BatchComplexity
        );
        let measuring = Limits {
            mode: LimitMode::Measure,
            ..limits
        };
        assert_eq!(measuring.apply(Err(over)), Ok(()));
        assert_eq!(limits.apply(Err(over)), Err(over));
    }

    #[test]
    fn nul_characters_are_found_in_arguments_and_variables() {
        let document = async_graphql::parser::parse_query(
            r#"{ customers(after: "a\u0000b") { totalCount } }"#,
        )
        .unwrap();
        assert!(arguments_hold_nul(&document));
        let clean =
            async_graphql::parser::parse_query(r#"{ customers(after: "ab") { totalCount } }"#)
                .unwrap();
        assert!(!arguments_hold_nul(&clean));
        assert!(holds_nul(
            &Value::from_json(serde_json::json!({"a": ["x\u{0}"]})).unwrap()
        ));
    }
}
