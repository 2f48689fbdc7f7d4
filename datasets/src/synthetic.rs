//! Built-in synthetic tasks: no download, the same problems for the same seed, and difficulty
//! knobs. Their samples are what the `math` and `countdown` checkers read.
//!
//! - [`Arithmetic`]: `What is 482 + 913 * 27 - 550?` with `digits` per operand and `operations`
//!   operators (`+`, `-`, `*`, usual precedence); sample `{"answer": "24595", "expression"}`.
//! - [`Countdown`]: `numbers` numbers in `1..=max_number` and a target reached by an expression
//!   that uses each of them exactly once (built first, so every instance is solvable); sample
//!   `{"target", "numbers", "solution"}` where `solution` is that witness expression.
//! - [`Addition`]: `What is 478 + 356?`, the task of the built-in R1-Zero demo. Besides the
//!   problems it writes the two kinds of answer its base model is pretrained on: a worked
//!   column-by-column solution with carries, and a bare guess.
//! - [`Multiplication`]: `What is 478 * 356?`, the task of `aha demo tools` (its completions,
//!   a guess or a call to the Python tool: [`crate::ToolUse`]).
//!
//! [`BuiltinSpec`] parses the command-line form `builtin:NAME[:key=value,...]`.

use std::str::FromStr;

use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::{json, Map, Value};

use crate::error::{DatasetError, Result};
use crate::mapping::COUNTDOWN_QUESTION;
use crate::problem::Problem;
use crate::template::PromptTemplate;

/// Multi-digit integer arithmetic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arithmetic {
    /// Digits of each operand (1..=9); the leading digit is never 0.
    pub digits: u32,
    /// Number of operators (1..=8).
    pub operations: usize,
}

impl Default for Arithmetic {
    fn default() -> Self {
        Arithmetic { digits: 3, operations: 2 }
    }
}

impl Arithmetic {
    pub fn validate(&self) -> Result<()> {
        if !(1..=9).contains(&self.digits) {
            return Err(DatasetError::Invalid(format!("arithmetic: digits must be 1..=9, got {}", self.digits)));
        }
        if !(1..=8).contains(&self.operations) {
            return Err(DatasetError::Invalid(format!("arithmetic: ops must be 1..=8, got {}", self.operations)));
        }
        Ok(())
    }

    /// `count` problems drawn from `seed`; ids `arithmetic-{seed}-{i}`.
    pub fn generate(&self, count: usize, seed: u64) -> Result<Vec<Problem>> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let high = 10i128.pow(self.digits) - 1;
        let low = if self.digits == 1 { 0 } else { 10i128.pow(self.digits - 1) };
        Ok((0..count)
            .map(|i| {
                // Long runs of `*` on wide operands can exceed i128: draw again (rare).
                let (operands, operators, value) = loop {
                    let operands: Vec<i128> = (0..=self.operations).map(|_| rng.random_range(low..=high)).collect();
                    let operators: Vec<char> =
                        (0..self.operations).map(|_| *['+', '-', '*'].choose(&mut rng).unwrap()).collect();
                    if let Some(value) = evaluate(&operands, &operators) {
                        break (operands, operators, value);
                    }
                };
                let mut expression = operands[0].to_string();
                for (op, operand) in operators.iter().zip(&operands[1..]) {
                    expression.push_str(&format!(" {op} {operand}"));
                }
                let fields = json!({ "answer": value.to_string(), "expression": expression });
                Problem {
                    id: format!("arithmetic-{seed}-{i}"),
                    question: format!("What is {expression}?"),
                    fields: into_map(fields),
                }
            })
            .collect())
    }
}

/// `operands[0] op0 operands[1] op1 ...` with `*` before `+` and `-`; `None` on overflow.
fn evaluate(operands: &[i128], operators: &[char]) -> Option<i128> {
    let mut total = 0i128;
    let mut term = operands[0];
    let mut sign = 1i128;
    for (op, &operand) in operators.iter().zip(&operands[1..]) {
        if *op == '*' {
            term = term.checked_mul(operand)?;
        } else {
            total = total.checked_add(sign.checked_mul(term)?)?;
            term = operand;
            sign = if *op == '+' { 1 } else { -1 };
        }
    }
    total.checked_add(sign.checked_mul(term)?)
}

/// What [`Addition`] and [`Multiplication`] share: problems `a {symbol} b` over two `digits`-digit
/// operands, with the fields `answer` and `expression` (`"478 + 356"`).
struct TwoOperands {
    /// The task's name, in ids (`{name}-{seed}-{i}`) and errors.
    name: &'static str,
    symbol: &'static str,
    apply: fn(u64, u64) -> u64,
}

impl TwoOperands {
    fn validate(&self, digits: u32) -> Result<()> {
        if !(1..=6).contains(&digits) {
            return Err(DatasetError::Invalid(format!("{}: digits must be 1..=6, got {digits}", self.name)));
        }
        Ok(())
    }

    fn generate(&self, digits: u32, count: usize, seed: u64) -> Result<Vec<Problem>> {
        self.validate(digits)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let high = 10u64.pow(digits) - 1;
        let low = if digits == 1 { 0 } else { 10u64.pow(digits - 1) };
        let symbol = self.symbol;
        Ok((0..count)
            .map(|i| {
                let (a, b) = (rng.random_range(low..=high), rng.random_range(low..=high));
                let fields =
                    json!({ "answer": (self.apply)(a, b).to_string(), "expression": format!("{a} {symbol} {b}") });
                Problem {
                    id: format!("{}-{seed}-{i}", self.name),
                    question: format!("What is {a} {symbol} {b}?"),
                    fields: into_map(fields),
                }
            })
            .collect())
    }

    fn operands(&self, problem: &Problem) -> Option<(u64, u64)> {
        let expression = problem.fields.get("expression")?.as_str()?;
        let (a, b) = expression.split_once(&format!(" {} ", self.symbol))?;
        Some((a.parse().ok()?, b.parse().ok()?))
    }
}

/// Column addition of two `digits`-digit numbers; sample `{"answer": "834", "expression":
/// "478 + 356"}` (the `math` checker's fields).
///
/// The demo's base model learns two ways to answer in the R1 format (after the prompt's
/// "Assistant:"): [`Addition::worked_completion`], the columns from the right with their carries,
///
/// ```text
///  <think> ones: 8+6=14, write 4 carry 1. tens: 7+5+1=13, write 3 carry 1. hundreds: 4+3+1=8,
///  write 8. </think> <answer>834</answer>
/// ```
///
/// and [`Addition::guessed_completion`], ` <think> </think> <answer>834</answer>`. A small model
/// cannot add three-digit numbers in one token, so its guesses are mostly wrong while its worked
/// solutions are mostly right: the contrast that reinforcement learning then discovers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addition {
    /// Digits of each operand (1..=6); the leading digit is never 0.
    pub digits: u32,
}

impl Default for Addition {
    fn default() -> Self {
        Addition { digits: 3 }
    }
}

/// Column names of the worked solution, from the right.
const COLUMNS: [&str; 7] = ["ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands", "millions"];

impl Addition {
    const OPERATION: TwoOperands = TwoOperands { name: "addition", symbol: "+", apply: |a, b| a + b };

    pub fn validate(&self) -> Result<()> {
        Self::OPERATION.validate(self.digits)
    }

    /// `count` problems drawn from `seed`; ids `addition-{seed}-{i}`.
    pub fn generate(&self, count: usize, seed: u64) -> Result<Vec<Problem>> {
        Self::OPERATION.generate(self.digits, count, seed)
    }

    /// The two operands of a problem made by [`Addition::generate`].
    pub fn operands(problem: &Problem) -> Option<(u64, u64)> {
        Self::OPERATION.operands(problem)
    }

    /// The worked solution of `a + b`: each column from the right, with its carry.
    pub fn worked_completion(a: u64, b: u64) -> String {
        let (digits_a, digits_b) = (digits_from_right(a), digits_from_right(b));
        let columns = digits_a.len().max(digits_b.len());
        let mut text = String::from(" <think>");
        let mut carry = 0;
        for column in 0..columns {
            let (x, y) = (digits_a.get(column).copied().unwrap_or(0), digits_b.get(column).copied().unwrap_or(0));
            let sum = x + y + carry;
            let carried = if carry > 0 { format!("+{carry}") } else { String::new() };
            text.push_str(&format!(" {}: {x}+{y}{carried}={sum}, write {}", COLUMNS[column], sum % 10));
            carry = sum / 10;
            text.push_str(if carry > 0 { " carry 1." } else { "." });
        }
        if carry > 0 {
            text.push_str(" write 1.");
        }
        text.push_str(&format!(" </think> <answer>{}</answer>", a + b));
        text
    }

    /// A bare answer, with nothing worked out: ` <think> </think> <answer>{answer}</answer>`.
    pub fn guessed_completion(answer: u64) -> String {
        format!(" <think> </think> <answer>{answer}</answer>")
    }

    /// What only a worked solution contains: its first column.
    pub const WORKED_MARK: &'static str = "ones:";

    /// Whether a completion works the sum out column by column (at least its first column) rather
    /// than guessing: the form whose share the demo reports.
    pub fn is_worked(completion: &str) -> bool {
        completion.contains(Self::WORKED_MARK)
    }
}

fn digits_from_right(mut n: u64) -> Vec<u64> {
    let mut digits = vec![n % 10];
    n /= 10;
    while n > 0 {
        digits.push(n % 10);
        n /= 10;
    }
    digits
}

/// Products of two `digits`-digit numbers; sample `{"answer": "170168", "expression": "478 * 356"}`
/// (the `math` checker's fields). The task of `aha demo tools`: too hard for a small model to
/// answer in one go, one line of Python for the tool (see [`crate::ToolUse`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Multiplication {
    /// Digits of each operand (1..=6); the leading digit is never 0.
    pub digits: u32,
}

impl Default for Multiplication {
    fn default() -> Self {
        Multiplication { digits: 3 }
    }
}

impl Multiplication {
    const OPERATION: TwoOperands = TwoOperands { name: "multiplication", symbol: "*", apply: |a, b| a * b };

    pub fn validate(&self) -> Result<()> {
        Self::OPERATION.validate(self.digits)
    }

    /// `count` problems drawn from `seed`; ids `multiplication-{seed}-{i}`.
    pub fn generate(&self, count: usize, seed: u64) -> Result<Vec<Problem>> {
        Self::OPERATION.generate(self.digits, count, seed)
    }

    /// The two operands of a problem made by [`Multiplication::generate`].
    pub fn operands(problem: &Problem) -> Option<(u64, u64)> {
        Self::OPERATION.operands(problem)
    }
}

/// Countdown (TinyZero's task): reach `target` from `numbers`, each used exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Countdown {
    /// How many numbers (2..=6).
    pub numbers: usize,
    /// Numbers are drawn from 1..=max_number.
    pub max_number: u32,
    /// Targets are in 1..=max_target.
    pub max_target: u32,
}

impl Default for Countdown {
    fn default() -> Self {
        Countdown { numbers: 4, max_number: 99, max_target: 1000 }
    }
}

impl Countdown {
    pub fn validate(&self) -> Result<()> {
        if !(2..=6).contains(&self.numbers) {
            return Err(DatasetError::Invalid(format!("countdown: numbers must be 2..=6, got {}", self.numbers)));
        }
        if !(1..=10_000).contains(&self.max_number) || self.max_target < 1 {
            return Err(DatasetError::Invalid("countdown: max must be 1..=10000 and max_target at least 1".into()));
        }
        Ok(())
    }

    /// `count` instances drawn from `seed`; ids `countdown-{seed}-{i}`.
    pub fn generate(&self, count: usize, seed: u64) -> Result<Vec<Problem>> {
        self.validate()?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let question = PromptTemplate::new(COUNTDOWN_QUESTION);
        (0..count)
            .map(|i| {
                let (numbers, target, solution) = self.instance(&mut rng)?;
                let fields = into_map(json!({ "target": target, "numbers": numbers, "solution": solution }));
                let question = question
                    .render_fields(|name| fields.get(name).map(crate::template::display_value))
                    .expect("the Countdown question only names target and numbers");
                Ok(Problem { id: format!("countdown-{seed}-{i}"), question, fields })
            })
            .collect()
    }

    /// Draws numbers, combines them at random into one expression whose intermediate values stay
    /// positive integers, and keeps it when the result is a valid target.
    fn instance(&self, rng: &mut ChaCha8Rng) -> Result<(Vec<u64>, u64, String)> {
        for _ in 0..10_000 {
            let numbers: Vec<u64> =
                (0..self.numbers).map(|_| rng.random_range(1..=u64::from(self.max_number))).collect();
            // (value, text, is a compound expression)
            let mut terms: Vec<(u64, String, bool)> = numbers.iter().map(|&n| (n, n.to_string(), false)).collect();
            terms.shuffle(rng);
            while terms.len() > 1 {
                let a = terms.swap_remove(rng.random_range(0..terms.len()));
                let b = terms.swap_remove(rng.random_range(0..terms.len()));
                let (big, small) = if a.0 >= b.0 { (a, b) } else { (b, a) };
                let mut choices: Vec<(char, u64)> = Vec::with_capacity(4);
                if let Some(sum) = big.0.checked_add(small.0) {
                    choices.push(('+', sum));
                }
                if let Some(product) = big.0.checked_mul(small.0) {
                    choices.push(('*', product));
                }
                if big.0 > small.0 {
                    choices.push(('-', big.0 - small.0));
                }
                if big.0 % small.0 == 0 {
                    choices.push(('/', big.0 / small.0));
                }
                let Some(&(op, value)) = choices.choose(rng) else { break };
                let wrap = |(_, text, compound): &(u64, String, bool)| {
                    if *compound {
                        format!("({text})")
                    } else {
                        text.clone()
                    }
                };
                // `-` and `/` need the larger term first; `+` and `*` take either order.
                let (left, right) =
                    if matches!(op, '+' | '*') && rng.random_bool(0.5) { (&small, &big) } else { (&big, &small) };
                terms.push((value, format!("{} {op} {}", wrap(left), wrap(right)), true));
            }
            if terms.len() != 1 {
                continue; // a sum or product overflowed: draw again
            }
            let (target, solution, _) = terms.pop().expect("one term left");
            if (1..=u64::from(self.max_target)).contains(&target) {
                return Ok((numbers, target, solution));
            }
        }
        Err(DatasetError::Invalid(format!("countdown: no instance with a target in 1..={} found", self.max_target)))
    }
}

/// A built-in task and how many problems to draw: `builtin:arithmetic`,
/// `builtin:arithmetic:digits=4,ops=3,count=200,seed=7`, `builtin:countdown:numbers=3,max=50`,
/// `builtin:addition:digits=3`, `builtin:multiplication:digits=3`. Keys: `count` (default 100) and `seed` (default: the caller's)
/// for all; `digits`, `ops` for arithmetic; `numbers`, `max`, `max_target` for countdown;
/// `digits` for addition and multiplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuiltinSpec {
    pub task: BuiltinTask,
    pub count: usize,
    pub seed: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BuiltinTask {
    Arithmetic(Arithmetic),
    Countdown(Countdown),
    Addition(Addition),
    Multiplication(Multiplication),
}

impl BuiltinTask {
    /// The checker whose fields the task's samples carry.
    pub fn checker(&self) -> &'static str {
        match self {
            BuiltinTask::Arithmetic(_) | BuiltinTask::Addition(_) | BuiltinTask::Multiplication(_) => "math",
            BuiltinTask::Countdown(_) => "countdown",
        }
    }
}

impl BuiltinSpec {
    /// True for the `builtin:` form.
    pub fn matches(text: &str) -> bool {
        text.starts_with("builtin:")
    }

    /// The problems, with the spec's seed or else `default_seed`.
    pub fn generate(&self, default_seed: u64) -> Result<Vec<Problem>> {
        let seed = self.seed.unwrap_or(default_seed);
        match &self.task {
            BuiltinTask::Arithmetic(task) => task.generate(self.count, seed),
            BuiltinTask::Countdown(task) => task.generate(self.count, seed),
            BuiltinTask::Addition(task) => task.generate(self.count, seed),
            BuiltinTask::Multiplication(task) => task.generate(self.count, seed),
        }
    }
}

impl FromStr for BuiltinSpec {
    type Err = DatasetError;

    fn from_str(text: &str) -> Result<Self> {
        let bad = |message: String| DatasetError::Invalid(format!("{text}: {message}"));
        let rest = text.strip_prefix("builtin:").ok_or_else(|| bad("expected builtin:NAME[:key=value,...]".into()))?;
        let (name, options) = rest.split_once(':').unwrap_or((rest, ""));
        let mut spec = BuiltinSpec {
            task: match name {
                "arithmetic" => BuiltinTask::Arithmetic(Arithmetic::default()),
                "countdown" => BuiltinTask::Countdown(Countdown::default()),
                "addition" => BuiltinTask::Addition(Addition::default()),
                "multiplication" => BuiltinTask::Multiplication(Multiplication::default()),
                _ => {
                    return Err(bad(format!(
                        "unknown built-in task \"{name}\" (arithmetic, countdown, addition or multiplication)"
                    )))
                }
            },
            count: 100,
            seed: None,
        };
        for option in options.split(',').filter(|o| !o.is_empty()) {
            let (key, value) =
                option.split_once('=').ok_or_else(|| bad(format!("option \"{option}\" is not key=value")))?;
            let number: u64 =
                value.parse().map_err(|_| bad(format!("{key}: \"{value}\" is not a non-negative integer")))?;
            match (&mut spec.task, key) {
                (_, "count") => spec.count = number as usize,
                (_, "seed") => spec.seed = Some(number),
                (BuiltinTask::Arithmetic(task), "digits") => task.digits = number.min(u64::from(u32::MAX)) as u32,
                (BuiltinTask::Arithmetic(task), "ops") => task.operations = number as usize,
                (BuiltinTask::Addition(task), "digits") => task.digits = number.min(u64::from(u32::MAX)) as u32,
                (BuiltinTask::Multiplication(task), "digits") => task.digits = number.min(u64::from(u32::MAX)) as u32,
                (BuiltinTask::Countdown(task), "numbers") => task.numbers = number as usize,
                (BuiltinTask::Countdown(task), "max") => task.max_number = number.min(u64::from(u32::MAX)) as u32,
                (BuiltinTask::Countdown(task), "max_target") => {
                    task.max_target = number.min(u64::from(u32::MAX)) as u32
                }
                _ => return Err(bad(format!("unknown option \"{key}\" for {name}"))),
            }
        }
        match &spec.task {
            BuiltinTask::Arithmetic(task) => task.validate()?,
            BuiltinTask::Countdown(task) => task.validate()?,
            BuiltinTask::Addition(task) => task.validate()?,
            BuiltinTask::Multiplication(task) => task.validate()?,
        }
        Ok(spec)
    }
}

fn into_map(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("json! of an object"),
    }
}
