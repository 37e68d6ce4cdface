//! The member's HTTP endpoint (`Config::http_listen`): what each path answers, from this
//! member's own status and transport counters, rendered by `observe` exactly as `haven status`
//! renders them.
//!
//! | path | answer |
//! |------|--------|
//! | `GET /metrics` | Prometheus text format 0.0.4: `haven status --prometheus` for this member, plus its transport's drops by reason and refused connections by reason |
//! | `GET /health` | `200` and a one-line summary when the member knows a leader and its applied index is within `Config::health_max_lag_entries` of its commit index; else `503` and the one-line reason |
//! | `GET /status` | `haven status --json` for this member (one row: itself) |

use super::{NodeShared, NodeTransport};
use crate::error::Result;
use crate::observe::http::{Handler, HttpResponse, HttpServer};
use crate::observe::{self, ClusterView};
use std::net::SocketAddr;
use std::sync::Arc;

/// Start the endpoint on `addr`.
pub(super) fn start(
    addr: SocketAddr,
    shared: &Arc<NodeShared>,
    transport: &Arc<NodeTransport>,
    max_lag_entries: u64,
) -> Result<HttpServer> {
    let id = shared.id;
    let shared = Arc::clone(shared);
    // A weak handle: the endpoint must not keep a shut-down transport alive.
    let transport = Arc::downgrade(transport);
    let handler: Handler = Arc::new(move |path: &str| {
        let status = || {
            shared
                .status()
                .map_err(|e| HttpResponse::text(503, format!("member {id} did not answer: {e}\n")))
        };
        let answer = match path {
            "/metrics" => status().map(|s| {
                let mut text = observe::prometheus(&ClusterView::of_member(&s));
                if let Some(t) = transport.upgrade() {
                    let peers: Vec<_> = t
                        .peers()
                        .into_iter()
                        .filter_map(|(peer, _)| t.peer_stats(peer).map(|st| (peer, st)))
                        .collect();
                    text.push_str(&observe::transport_metrics(id, &t.stats(), &peers));
                }
                HttpResponse {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: text,
                }
            }),
            "/health" => status().map(|s| match observe::health(&s, max_lag_entries) {
                Ok(summary) => HttpResponse::text(200, summary + "\n"),
                Err(reason) => HttpResponse::text(503, reason + "\n"),
            }),
            "/status" => status().map(|s| HttpResponse {
                status: 200,
                content_type: "application/json",
                body: observe::json(&ClusterView::of_member(&s)) + "\n",
            }),
            _ => return None,
        };
        Some(answer.unwrap_or_else(|failed| failed))
    });
    HttpServer::start(addr, &format!("haven-{}", id.0), handler)
}
