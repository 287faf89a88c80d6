// Composes the hub gateway's subgraph SDL (read from the file named by the first argument,
// as `_service { sdl }` returned it) with a small second subgraph that extends Customer,
// Order and Purchase by their keys, using Apollo's own composition library. Prints the
// composed supergraph's entity types and exits 1 with the errors when composition fails.
import { readFileSync } from "node:fs";
import { composeServices } from "@apollo/composition";
import { parse } from "graphql";

const hubSdl = readFileSync(process.argv[2], "utf8");
const reviewsSdl = `
  extend schema @link(url: "https://specs.apollo.dev/federation/v2.3", import: ["@key"])
  type Customer @key(fields: "id") { id: ID! reviews: [Review!]! }
  type Order @key(fields: "id") { id: ID! rating: Int }
  type Purchase @key(fields: "id") { id: ID! giftWrapped: Boolean }
  type Review { body: String! }
  type Query { topReviews: [Review!]! }
`;
const result = composeServices([
  { name: "hub", url: "http://127.0.0.1:4000/graphql", typeDefs: parse(hubSdl) },
  { name: "reviews", url: "http://127.0.0.1:4001/graphql", typeDefs: parse(reviewsSdl) },
]);
if (result.errors && result.errors.length > 0) {
  for (const error of result.errors) console.error(`composition error: ${error.message}`);
  process.exit(1);
}
const schema = result.schema.toGraphQLJSSchema();
for (const name of ["Customer", "Order", "Purchase"]) {
  const fields = Object.keys(schema.getType(name).getFields()).sort();
  console.log(`${name}: ${fields.join(" ")}`);
}
