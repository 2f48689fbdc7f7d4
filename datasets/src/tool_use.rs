//! The task of `aha demo tools`: 3-digit products (the problems of [`Multiplication`]) answered
//! by a guess or by a call to the Python tool.
//!
//! The base model of that demo is pretrained on completions of two kinds. Most guess: they write
//! a product of the right size and leading digits that is usually wrong, as a hasty estimate is:
//!
//! ```text
//!  <think> 478 * 356 = 171392. </think> <answer>171392</answer>
//! ```
//!
//! A minority (30% in the committed corpus) call the tool instead, with the call format of
//! `[tools.python]` (`<python>…</python>`); the engine writes the result after the call with the
//! demo's delimiters, [`ToolUse::OUTPUT_OPEN`] and [`ToolUse::OUTPUT_CLOSE`] (` = ` and `.`), and
//! the completion goes on with the answer:
//!
//! ```text
//!  <think> 478 * 356 = <python>print( 478 * 356, end='')</python> = 170168. </think> <answer>170168</answer>
//! ```
//!
//! The format is chosen for what a one-million-parameter model copies well. It copies the operands
//! into the call when each is written after a space (digits are single tokens, and ` 478` then
//! reads as in the question), and it copies the number written after ` = ` into the answer, which
//! every guess also does; a result between `<output>` and `</output>` that it had to copy on its
//! own it learned to copy except for the fourth of six digits, after 3000 steps.
//!
//! Nothing in the corpus says that calling pays: the choice is made after the same words
//! (`478 * 356 =`), at the rate of the corpus. A one-million-parameter model cannot multiply
//! three-digit numbers, so its guesses are almost always wrong while its calls are right whenever
//! it copies the operands and the result: the contrast reinforcement learning on the final answer
//! alone can discover. [`ToolUse::analyse`] reads a completion back.

use rand::Rng;

use crate::self_check::last_answer;

/// Completions with and without a call to the Python tool for [`crate::Multiplication`] problems.
pub struct ToolUse;

/// What [`ToolUse::analyse`] reads from a completion.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolCompletion {
    /// Whether the completion holds a complete call (`<python>…</python>`).
    pub uses_tool: bool,
    /// The tool's result: what stands between [`ToolUse::OUTPUT_OPEN`] right after the call and
    /// the next [`ToolUse::OUTPUT_CLOSE`], trimmed, if any.
    pub output: Option<String>,
    /// The content of the last `<answer>` tag, trimmed, if any.
    pub final_answer: Option<String>,
}

impl ToolCompletion {
    /// A call whose result the answer copies.
    pub fn copies_output(&self) -> bool {
        self.uses_tool && self.output.is_some() && self.output == self.final_answer
    }
}

impl ToolUse {
    /// The call format of the demo (one of `[tools.python]`'s default `calls`).
    pub const CALL_OPEN: &'static str = "<python>";
    pub const CALL_CLOSE: &'static str = "</python>";

    /// How the demo's configuration (`examples/configs/tools.toml`, `tools.python.output_open`
    /// and `output_close`) has the engine write a result after the call.
    pub const OUTPUT_OPEN: &'static str = " = ";
    pub const OUTPUT_CLOSE: &'static str = ".";

    /// The call that computes `a * b` (printed without a newline, so that the result reads as a
    /// guess does: ` = 170168.`).
    pub fn call(a: u64, b: u64) -> String {
        format!("{}print( {a} * {b}, end=''){}", Self::CALL_OPEN, Self::CALL_CLOSE)
    }

    /// What the call prints.
    pub fn stdout(a: u64, b: u64) -> String {
        (a * b).to_string()
    }

    /// A guess at `a * b`: the product with probability `right`, else a plausible wrong one (the
    /// product's first two digits kept, the others drawn at random; never the product).
    pub fn guess(a: u64, b: u64, right: f64, rng: &mut impl Rng) -> u64 {
        let product = a * b;
        if rng.random_bool(right) {
            return product;
        }
        let digits = product.to_string().len() as u32;
        let tail = 10u64.pow(digits.saturating_sub(2));
        loop {
            let guess = product / tail * tail + rng.random_range(0..tail);
            if guess != product {
                return guess;
            }
            if tail == 1 {
                return product + 1;
            }
        }
    }

    /// The completion that guesses.
    pub fn guessed_completion(a: u64, b: u64, guess: u64) -> String {
        format!(" <think> {a} * {b} = {guess}. </think> <answer>{guess}</answer>")
    }

    /// The completion that calls the tool, in three parts: the text up to the end of the call
    /// (the model's), the result as the engine injects it ([`ToolUse::OUTPUT_OPEN`], the stdout,
    /// [`ToolUse::OUTPUT_CLOSE`]) and the rest (the model's again: the answer, copied).
    pub fn tool_completion_parts(a: u64, b: u64) -> [String; 3] {
        [
            format!(" <think> {a} * {b} = {}", Self::call(a, b)),
            format!("{}{}{}", Self::OUTPUT_OPEN, Self::stdout(a, b), Self::OUTPUT_CLOSE),
            format!(" </think> <answer>{}</answer>", a * b),
        ]
    }

    /// The completion that calls the tool (the parts of [`ToolUse::tool_completion_parts`] joined).
    pub fn tool_completion(a: u64, b: u64) -> String {
        Self::tool_completion_parts(a, b).concat()
    }

    /// A completion that holds a complete call.
    pub fn uses_tool(completion: &str) -> bool {
        completion.find(Self::CALL_OPEN).is_some_and(|open| completion[open..].contains(Self::CALL_CLOSE))
    }

    /// Reads a completion back: whether it calls the tool, the result, the final answer.
    pub fn analyse(completion: &str) -> ToolCompletion {
        let uses_tool = Self::uses_tool(completion);
        let output = uses_tool
            .then(|| {
                let close = completion.find(Self::CALL_CLOSE)? + Self::CALL_CLOSE.len();
                let result = completion[close..].strip_prefix(Self::OUTPUT_OPEN)?;
                let end = result.find(Self::OUTPUT_CLOSE)?;
                Some(result[..end].trim().to_string())
            })
            .flatten();
        ToolCompletion { uses_tool, output, final_answer: last_answer(completion) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn completions_read_back() {
        let text = ToolUse::tool_completion(478, 356);
        assert_eq!(
            text,
            " <think> 478 * 356 = <python>print( 478 * 356, end='')</python> = 170168. </think> <answer>170168</answer>"
        );
        let read = ToolUse::analyse(&text);
        assert!(read.uses_tool && read.copies_output());
        assert_eq!(read.output.as_deref(), Some("170168"));
        assert_eq!(read.final_answer.as_deref(), Some("170168"));
        let guess = ToolUse::analyse(&ToolUse::guessed_completion(478, 356, 171392));
        assert!(!guess.uses_tool && !guess.copies_output() && guess.output.is_none());
        assert_eq!(guess.final_answer.as_deref(), Some("171392"));
        // A call whose result is not where the engine writes it has none; an unclosed call is no call.
        assert_eq!(ToolUse::analyse(" <think> 4 * 3 = <python>print( 4 * 3, end='')</python> 12.").output, None);
        assert!(!ToolUse::uses_tool(" <think> 478 * 356 = <python>print( 478 * 356) </think>"));
    }

    #[test]
    fn wrong_guesses_keep_the_leading_digits_and_are_never_the_product() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for a in (100..1000).step_by(37) {
            for b in (100..1000).step_by(41) {
                let guess = ToolUse::guess(a, b, 0.0, &mut rng);
                assert_ne!(guess, a * b, "{a} * {b}");
                let (g, p) = (guess.to_string(), (a * b).to_string());
                assert_eq!((g.len(), &g[..2]), (p.len(), &p[..2]), "{a} * {b}");
            }
        }
        assert_eq!(ToolUse::guess(478, 356, 1.0, &mut rng), 478 * 356);
    }
}
