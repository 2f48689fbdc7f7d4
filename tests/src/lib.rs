//! End-to-end tests live in tests/; this crate holds what they share: a stand-in for vLLM and
//! SGLang servers ([`fake_server`]).

pub mod fake_server;
