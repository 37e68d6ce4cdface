//! The in-process backend: a [`Client`] whose calls go straight to a member running in this
//! process (its driver, or its apply thread for reads), with no socket in between.

use super::watch::WatchStream;
use super::{Backend, Client, ClientOptions};
use crate::error::Result;
use crate::node::{Node, NodeShared};
use crate::proto::{Request, Response, WatchSpec};
use crate::sm::MapReader;
use std::sync::Arc;
use std::time::Instant;

/// Calls one member's request path directly.
struct LocalBackend {
    shared: Arc<NodeShared>,
}

impl Backend for LocalBackend {
    fn call(&self, request: Request, deadline: Instant) -> Result<Response> {
        self.shared.call(request, deadline)
    }

    fn watch(&self, spec: &WatchSpec, deadline: Instant) -> Result<WatchStream> {
        if self
            .shared
            .stopped
            .load(std::sync::atomic::Ordering::SeqCst)
        {
            // Nowhere else to go: an in-process client is bound to its member.
            return Err(crate::error::Error::Fatal(format!(
                "member {} is shut down",
                self.shared.id
            )));
        }
        let mut watch = Node::watch_local(&self.shared, spec.clone(), deadline)?;
        let id = watch.id;
        let shared = Arc::clone(&self.shared);
        Ok(WatchStream {
            next: Box::new(move |timeout| watch.recv_timeout(timeout)),
            cancel: Box::new(move || shared.watches.cancel_local(id)),
        })
    }

    fn describe(&self) -> String {
        format!("member {} (in process)", self.shared.id)
    }

    fn maps(&self) -> Option<&MapReader> {
        Some(&self.shared.maps)
    }

    fn in_process(&self) -> bool {
        true
    }
}

impl Node {
    /// A client that goes through this member (in process; writes and linearizable reads are
    /// forwarded to the leader when this member is not it). Cheap; clone it freely.
    pub fn client(&self) -> Client {
        self.client_with(ClientOptions {
            request_timeout: self.shared().request_timeout,
            ..ClientOptions::default()
        })
    }

    /// A client through this member with other options.
    pub fn client_with(&self, options: ClientOptions) -> Client {
        Client::with_backend(
            Arc::new(LocalBackend {
                shared: Arc::clone(self.shared()),
            }),
            options,
        )
    }
}
