//! The TCP transport: framing, authenticated handshake, per-peer sender threads.
