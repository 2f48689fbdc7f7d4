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
//! A minority (15% in the committed corpus) call the tool instead, with the call format of
//! `[tools.python]` (`<python>…</python>`), and copy its result, written exactly as the engine
//! injects it at RL time (the configuration's `output_open`, Python's stdout, `output_close`),
//! into the answer:
//!
//! ```text
//!  <think> 478 * 356 = <python>print( 478 * 356)</python> <output>
//! 170168
//! </output>
//! 170168. </think> <answer>170168</answer>
//! ```
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
    /// The tool's result: the text between the first `<output>` and `</output>` after the call,
    /// trimmed, if any.
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

    /// The call that computes `a * b`.
    pub fn call(a: u64, b: u64) -> String {
        format!("{}print( {a} * {b}){}", Self::CALL_OPEN, Self::CALL_CLOSE)
    }

    /// What the call prints (Python's `print` ends its line).
    pub fn stdout(a: u64, b: u64) -> String {
        format!("{}\n", a * b)
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
    /// (the model's), the result as the engine injects it (`output_open`, the stdout,
    /// `output_close`) and the rest (the model's again, copying the result).
    pub fn tool_completion_parts(a: u64, b: u64, output_open: &str, output_close: &str) -> [String; 3] {
        let product = a * b;
        [
            format!(" <think> {a} * {b} = {}", Self::call(a, b)),
            format!("{output_open}{}{output_close}", Self::stdout(a, b)),
            format!("{product}. </think> <answer>{product}</answer>"),
        ]
    }

    /// The completion that calls the tool and copies its result (the parts of
    /// [`ToolUse::tool_completion_parts`] joined).
    pub fn tool_completion(a: u64, b: u64, output_open: &str, output_close: &str) -> String {
        Self::tool_completion_parts(a, b, output_open, output_close).concat()
    }

    /// A practice text (not a solution): a call and its result, copied, with no prompt. The base
    /// model learns from these to copy numbers into a call and a call's result out of it; its
    /// solutions call the tool no more often for them.
    pub fn practice_text(a: u64, b: u64, output_open: &str, output_close: &str) -> String {
        let [_, result, copy] = Self::tool_completion_parts(a, b, output_open, output_close);
        let copy = copy.split(" </think>").next().unwrap_or_default();
        format!("Python: {a} * {b} = {}{result}{copy}", Self::call(a, b))
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
                let after_call = &completion[completion.find(Self::CALL_CLOSE)?..];
                let start = after_call.find("<output>")? + "<output>".len();
                let end = after_call[start..].find("</output>")?;
                Some(after_call[start..start + end].trim().to_string())
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
        let text = ToolUse::tool_completion(478, 356, " <output>\n", "</output>\n");
        assert_eq!(
            text,
            " <think> 478 * 356 = <python>print( 478 * 356)</python> <output>\n170168\n</output>\n170168. </think> \
             <answer>170168</answer>"
        );
        let read = ToolUse::analyse(&text);
        assert!(read.uses_tool && read.copies_output());
        assert_eq!(read.output.as_deref(), Some("170168"));
        assert_eq!(read.final_answer.as_deref(), Some("170168"));
        // The engine's default delimiters read back the same way.
        let default = ToolUse::analyse(&ToolUse::tool_completion(478, 356, "\n<output>\n", "\n</output>\n"));
        assert_eq!(default.output.as_deref(), Some("170168"));
        let guess = ToolUse::analyse(&ToolUse::guessed_completion(478, 356, 171392));
        assert!(!guess.uses_tool && !guess.copies_output() && guess.output.is_none());
        assert_eq!(guess.final_answer.as_deref(), Some("171392"));
        // An unclosed call is no call.
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
