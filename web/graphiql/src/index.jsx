// GraphiQL for the hub gateway, served by the gateway itself (no CDN): queries and
// mutations over POST /graphql, subscriptions over graphql-transport-ws on the same path.
// The page passes its endpoints in a JSON block; `?query=` opens with that document.
import React from "react";
import { createRoot } from "react-dom/client";
import { GraphiQL } from "graphiql";
import { createGraphiQLFetcher } from "@graphiql/toolkit";
import { createClient } from "graphql-ws";
import "graphiql/graphiql.css";

const config = JSON.parse(document.getElementById("hub-graphiql-config").textContent);
const socketUrl = new URL(config.subscriptionEndpoint, window.location.href);
socketUrl.protocol = socketUrl.protocol === "https:" ? "wss:" : "ws:";
const fetcher = createGraphiQLFetcher({
  url: new URL(config.endpoint, window.location.href).href,
  wsClient: createClient({ url: socketUrl.href, lazy: true }),
});
const initialQuery = new URLSearchParams(window.location.search).get("query") ?? undefined;

createRoot(document.getElementById("graphiql")).render(
  <GraphiQL fetcher={fetcher} defaultQuery={initialQuery} query={initialQuery} />,
);
