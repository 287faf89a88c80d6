//! Which roles a GraphQL operation needs, checked before it runs (over HTTP, in batches and
//! on WebSockets alike): a query or subscription needs `read` (a federation router's
//! `_entities` too), introspection (`__schema`, `__type`, and federation's `_service`, which
//! returns the SDL) `introspect` (and `read` when the query also reads data), and each
//! mutation field the role [`mutation_role`] gives
//! it; a mutation this table does not know needs `admin`. An operation refused here runs
//! nothing, not even its first mutation field. The caller's [`Identity`] comes from the
//! request's data (HTTP) or the connection's (WebSocket); without one, the caller is
//! anonymous.

use std::collections::HashSet;
use std::sync::Arc;

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextPrepareRequest,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{ErrorExtensionValues, Request, ServerError, ServerResult, Value};

use crate::auth::{Authenticator, Identity, Role};

/// The role each mutation needs.
fn mutation_role(field: &str) -> Role {
    match field {
        "createOrder" | "recordPurchase" => Role::Write,
        // `ingestCustomers`, `retryFailedEvents`, and whatever is added without a row here.
        _ => Role::Admin,
    }
}

/// What running the selected operation of `document` needs: `None` when the operation is
/// not there (async-graphql reports that).
fn required_roles(
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> Option<Vec<(Role, String)>> {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(operation), _) => operation,
        (DocumentOperations::Multiple(operations), Some(name)) => operations.get(name)?,
        (DocumentOperations::Multiple(operations), None) if operations.len() == 1 => {
            operations.values().next()?
        }
        (DocumentOperations::Multiple(_), None) => return None,
    };
    let operation = &operation.node;
    let mut fields = Vec::new();
    root_fields(
        document,
        &operation.selection_set.node,
        &mut HashSet::new(),
        &mut fields,
    );
    let mut roles = vec![(Role::Read, "this operation".to_owned())];
    match operation.ty {
        OperationType::Query => {
            if let Some(meta) = fields.iter().find(|name| is_introspection(name)) {
                if fields
                    .iter()
                    .all(|name| is_introspection(name) || name == "__typename")
                {
                    roles.clear();
                }
                roles.push((Role::Introspect, format!("introspection ({meta})")));
            }
        }
        OperationType::Mutation => {
            roles.clear();
            roles.extend(
                fields
                    .iter()
                    .filter(|name| *name != "__typename")
                    .map(|name| (mutation_role(name), name.clone())),
            );
        }
        OperationType::Subscription => {}
    }
    Some(roles)
}

/// Whether a root field describes the schema rather than reading data.
fn is_introspection(field: &str) -> bool {
    matches!(field, "__schema" | "__type" | "_service")
}

/// The names of the fields at the top of `set`, fragments included (each once).
fn root_fields<'a>(
    document: &'a ExecutableDocument,
    set: &'a SelectionSet,
    spread: &mut HashSet<&'a str>,
    fields: &mut Vec<String>,
) {
    for item in &set.items {
        match &item.node {
            Selection::Field(field) => fields.push(field.node.name.node.to_string()),
            Selection::InlineFragment(inline) => {
                root_fields(document, &inline.node.selection_set.node, spread, fields)
            }
            Selection::FragmentSpread(fragment_spread) => {
                let name = fragment_spread.node.fragment_name.node.as_str();
                if !spread.insert(name) {
                    continue;
                }
                if let Some(fragment) = document.fragments.get(name) {
                    root_fields(document, &fragment.node.selection_set.node, spread, fields);
                }
            }
        }
    }
}

/// The caller's identity among `data` (a request's, or a WebSocket connection's session),
/// before async-graphql has attached it to a context.
pub(crate) fn identity_in(data: &async_graphql::Data) -> Option<&Identity> {
    data.get(&std::any::TypeId::of::<Identity>())
        .and_then(|identity| identity.downcast_ref::<Identity>())
}

/// Whether `identity` may run the selected operation of `document`: the refusal is the
/// error the operation answers with (`extensions.code` and the missing `role`).
pub(crate) fn authorize(
    identity: &Identity,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
) -> ServerResult<()> {
    for (role, what) in required_roles(document, operation_name)
        .into_iter()
        .flatten()
    {
        if let Err(denied) = identity.require(role, &what) {
            let mut error = ServerError::new(denied.message(), None);
            let mut extensions = ErrorExtensionValues::default();
            extensions.set("code", denied.code());
            extensions.set("role", Value::from(role.name()));
            error.extensions = Some(extensions);
            return Err(error);
        }
    }
    Ok(())
}

/// The extension that checks every operation's roles against the caller's identity.
pub struct Authorization(pub Arc<Authenticator>);

impl ExtensionFactory for Authorization {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(AuthorizationExtension(self.0.clone()))
    }
}

struct AuthorizationExtension(Arc<Authenticator>);

#[async_graphql::async_trait::async_trait]
impl Extension for AuthorizationExtension {
    async fn prepare_request(
        &self,
        ctx: &ExtensionContext<'_>,
        mut request: Request,
        next: NextPrepareRequest<'_>,
    ) -> ServerResult<Request> {
        // Request data is not attached to the context until after this hook: read it from
        // the request (HTTP), else the connection's data (WebSocket).
        let identity = identity_in(&request.data)
            .or_else(|| ctx.data_opt::<Identity>())
            .cloned()
            .unwrap_or_else(|| self.0.anonymous());
        let operation_name = request.operation_name.clone();
        if let Ok(document) = request.parsed_query() {
            authorize(&identity, document, operation_name.as_deref())?;
        }
        next.run(ctx, request).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn needs(query: &str, operation: Option<&str>) -> Vec<Role> {
        let document = async_graphql::parser::parse_query(query).unwrap();
        required_roles(&document, operation)
            .unwrap()
            .into_iter()
            .map(|(role, _)| role)
            .collect()
    }

    #[test]
    fn queries_read_introspection_introspects_and_mutations_need_their_role() {
        assert_eq!(needs("{ customers { totalCount } }", None), [Role::Read]);
        assert_eq!(
            needs("{ __schema { types { name } } __typename }", None),
            [Role::Introspect]
        );
        assert_eq!(
            needs(
                "query { ...Q customers { totalCount } } \
                 fragment Q on Query { __type(name: \"Order\") { name } }",
                None
            ),
            [Role::Read, Role::Introspect]
        );
        assert_eq!(needs("{ _service { sdl } }", None), [Role::Introspect]);
        assert_eq!(
            needs(
                "query($r: [_Any!]!) { _entities(representations: $r) { __typename } }",
                None
            ),
            [Role::Read]
        );
        assert_eq!(
            needs("subscription { orderCreated { id } }", None),
            [Role::Read]
        );
        assert_eq!(
            needs(
                "mutation { createOrder(input: {}) { id } retryFailedEvents }",
                None
            ),
            [Role::Write, Role::Admin]
        );
        assert_eq!(
            needs(
                "mutation { ... on Mutation { ingestCustomers { recordsProcessed } } }",
                None
            ),
            [Role::Admin]
        );
        assert_eq!(
            needs("mutation { someFutureMutation }", None),
            [Role::Admin]
        );
    }

    #[test]
    fn only_the_selected_operation_counts_and_cycles_end() {
        let document = "query Read { customers { totalCount } } mutation Fix { retryFailedEvents }";
        assert_eq!(needs(document, Some("Read")), [Role::Read]);
        assert_eq!(needs(document, Some("Fix")), [Role::Admin]);
        let parsed = async_graphql::parser::parse_query(document).unwrap();
        assert!(required_roles(&parsed, None).is_none());
        let cycle = "{ ...A } fragment A on Query { ...B __type(name: \"x\") { name } } \
                     fragment B on Query { ...A }";
        assert_eq!(needs(cycle, None), [Role::Introspect]);
    }

    #[tokio::test]
    async fn every_mutation_of_the_schema_has_its_role() {
        let schema = crate::graphql::schema_builder().finish();
        let response = schema
            .execute("{ __type(name: \"Mutation\") { fields { name } } }")
            .await;
        let data = response.data.into_json().unwrap();
        let fields: Vec<&str> = data["__type"]["fields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|field| field["name"].as_str().unwrap())
            .collect();
        let expected = [
            ("ingestCustomers", Role::Admin),
            ("createOrder", Role::Write),
            ("retryFailedEvents", Role::Admin),
            ("recordPurchase", Role::Write),
        ];
        assert_eq!(
            fields.len(),
            expected.len(),
            "{fields:?}: a new mutation needs its row in mutation_role"
        );
        for (field, role) in expected {
            assert!(fields.contains(&field), "{fields:?}");
            assert_eq!(mutation_role(field), role, "{field}");
        }
    }
}
