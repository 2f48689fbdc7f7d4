//! End-to-end tests live in tests/; this crate holds what they share: a stand-in for vLLM and
//! SGLang servers ([`fake_server`]), and call formats a random model's completions contain
//! ([`tool_calls`]).

pub mod fake_server;
pub mod tool_calls;
