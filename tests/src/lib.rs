//! End-to-end tests live in tests/; this crate holds what they share: a stand-in for vLLM and
//! SGLang servers ([`fake_server`]), what the tests against real vLLM servers share
//! ([`real_vllm`]), and call formats a random model's completions contain ([`tool_calls`]).

pub mod fake_server;
pub mod real_vllm;
pub mod tool_calls;
