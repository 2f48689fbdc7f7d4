//! The `countdown` checker (fields `target`, `numbers`), with TinyZero's rules.
//!
//! The last `<answer>…</answer>` must hold an arithmetic expression that uses every number of
//! `numbers` exactly once, with `+ - * /` and parentheses only, and equals `target` in exact
//! rational arithmetic. Reward: 1.0 when it does; `format_score` (default 0.1) when an answer tag
//! is there but the equation is malformed, uses the wrong numbers, divides by zero or misses the
//! target; 0.0 when there is no answer tag.
//!
//! The equation is parsed into a tree by our own parser: a general-purpose evaluator would accept
//! `//` and `/*` (comments in evalexpr), `^` or `**` (powers), truncating integer division,
//! unary signs, decimals or concatenated digits, each a way to cheat or to be wrong. All of these
//! are rejected here, as are implicit products, leading zeros and an `= target` suffix.

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::Zero;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::checker::{field, CheckError, Checker, ProblemFields, Verdict};

/// Options of the `countdown` checker.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CountdownOptions {
    /// Reward of an answer that is present but wrong or malformed.
    pub format_score: f64,
    /// Reward of a correct equation.
    pub score: f64,
}

impl Default for CountdownOptions {
    fn default() -> Self {
        CountdownOptions { format_score: 0.1, score: 1.0 }
    }
}

/// Why an equation was rejected.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EquationError {
    #[error("equation too long")]
    TooLong,
    #[error("nested too deeply")]
    TooDeep,
    #[error("character `{0}` is not allowed (only digits, + - * / and parentheses)")]
    BadChar(char),
    #[error("`{0}` is not allowed")]
    BadOperator(String),
    #[error("number `{0}` has a leading zero")]
    LeadingZero(String),
    #[error("expected a number or `(` at position {0}")]
    ExpectedOperand(usize),
    #[error("unexpected `{found}` at position {at}")]
    Unexpected { found: String, at: usize },
    #[error("unbalanced parentheses")]
    Unbalanced,
    #[error("empty equation")]
    Empty,
    #[error("division by zero")]
    DivisionByZero,
}

const MAX_EQUATION: usize = 1000;
const MAX_DEPTH: usize = 100;

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Num(BigInt),
    Bin(char, Box<Node>, Box<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(String),
    Op(char),
    Open,
    Close,
}

fn tokenize(text: &str) -> Result<Vec<(usize, Tok)>, EquationError> {
    if text.len() > MAX_EQUATION {
        return Err(EquationError::TooLong);
    }
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '0'..='9' => {
                let start = i;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
                let digits: String = chars[start..i].iter().collect();
                if i < chars.len() && chars[i] == '.' {
                    return Err(EquationError::BadChar('.'));
                }
                if digits.len() > 1 && digits.starts_with('0') {
                    return Err(EquationError::LeadingZero(digits));
                }
                out.push((start, Tok::Num(digits)));
            }
            '+' | '-' | '*' | '/' | '×' | '÷' => {
                let next = chars.get(i + 1).copied();
                let pair = |a: char, b: Option<char>| format!("{a}{}", b.unwrap_or(' '));
                if matches!((c, next), ('/', Some('/')) | ('/', Some('*')) | ('*', Some('*')) | ('*', Some('/'))) {
                    return Err(EquationError::BadOperator(pair(c, next)));
                }
                let op = match c {
                    '×' => '*',
                    '÷' => '/',
                    other => other,
                };
                out.push((i, Tok::Op(op)));
                i += 1;
            }
            '(' => {
                out.push((i, Tok::Open));
                i += 1;
            }
            ')' => {
                out.push((i, Tok::Close));
                i += 1;
            }
            '^' => return Err(EquationError::BadOperator("^".into())),
            other => return Err(EquationError::BadChar(other)),
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn at(&self) -> usize {
        self.toks.get(self.pos).map(|(p, _)| *p).unwrap_or(usize::MAX)
    }

    fn sum(&mut self) -> Result<Node, EquationError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(EquationError::TooDeep);
        }
        let mut lhs = self.product()?;
        while let Some((_, Tok::Op(op @ ('+' | '-')))) = self.toks.get(self.pos) {
            let op = *op;
            self.pos += 1;
            lhs = Node::Bin(op, Box::new(lhs), Box::new(self.product()?));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn product(&mut self) -> Result<Node, EquationError> {
        let mut lhs = self.operand()?;
        while let Some((_, Tok::Op(op @ ('*' | '/')))) = self.toks.get(self.pos) {
            let op = *op;
            self.pos += 1;
            lhs = Node::Bin(op, Box::new(lhs), Box::new(self.operand()?));
        }
        Ok(lhs)
    }

    /// A number or a parenthesised sum; no unary signs.
    fn operand(&mut self) -> Result<Node, EquationError> {
        let at = self.at();
        match self.toks.get(self.pos).cloned() {
            Some((_, Tok::Num(digits))) => {
                self.pos += 1;
                Ok(Node::Num(digits.parse().map_err(|_| EquationError::ExpectedOperand(at))?))
            }
            Some((_, Tok::Open)) => {
                self.pos += 1;
                let inner = self.sum()?;
                match self.toks.get(self.pos) {
                    Some((_, Tok::Close)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    _ => Err(EquationError::Unbalanced),
                }
            }
            Some((_, Tok::Op(op))) => Err(EquationError::Unexpected { found: op.to_string(), at }),
            Some((_, Tok::Close)) => Err(EquationError::Unexpected { found: ")".into(), at }),
            None => Err(EquationError::ExpectedOperand(at)),
        }
    }
}

/// Parses an equation and returns the numbers it uses and its exact value.
pub fn evaluate(text: &str) -> Result<(Vec<BigInt>, BigRational), EquationError> {
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Err(EquationError::Empty);
    }
    let mut parser = Parser { toks, pos: 0, depth: 0 };
    let tree = parser.sum()?;
    if let Some((at, tok)) = parser.toks.get(parser.pos) {
        let found = match tok {
            Tok::Num(n) => n.clone(),
            Tok::Op(o) => o.to_string(),
            Tok::Open => "(".into(),
            Tok::Close => ")".into(),
        };
        return Err(EquationError::Unexpected { found, at: *at });
    }
    let mut numbers = Vec::new();
    let value = eval(&tree, &mut numbers)?;
    Ok((numbers, value))
}

fn eval(node: &Node, numbers: &mut Vec<BigInt>) -> Result<BigRational, EquationError> {
    match node {
        Node::Num(n) => {
            numbers.push(n.clone());
            Ok(BigRational::from_integer(n.clone()))
        }
        Node::Bin(op, a, b) => {
            let a = eval(a, numbers)?;
            let b = eval(b, numbers)?;
            Ok(match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                _ => {
                    if b.is_zero() {
                        return Err(EquationError::DivisionByZero);
                    }
                    a / b
                }
            })
        }
    }
}

/// The content of the last complete `<answer>…</answer>`.
fn last_answer(text: &str) -> Option<&str> {
    let end = text.rfind("</answer>")?;
    let start = text[..end].rfind("<answer>")? + "<answer>".len();
    Some(&text[start..end])
}

/// The `countdown` checker.
#[derive(Debug, Clone, Default)]
pub struct CountdownChecker {
    options: CountdownOptions,
}

impl CountdownChecker {
    pub fn new(options: CountdownOptions) -> Self {
        CountdownChecker { options }
    }

    /// Judges `completion` for `target` and `numbers`.
    pub fn verdict(&self, completion: &str, target: &BigInt, numbers: &[BigInt]) -> Verdict {
        let Some(equation) = last_answer(completion) else {
            return Verdict::reward(0.0, json!({ "equation": Value::Null, "why": "no <answer>…</answer>" }));
        };
        let equation = equation.trim();
        let wrong = |why: String, used: Option<Vec<String>>, value: Option<String>| {
            Verdict::reward(
                self.options.format_score,
                json!({ "equation": equation, "why": why, "numbers_used": used, "value": value }),
            )
        };
        let (mut used, value) = match evaluate(equation) {
            Ok(v) => v,
            Err(e) => return wrong(e.to_string(), None, None),
        };
        let used_text: Vec<String> = used.iter().map(|n| n.to_string()).collect();
        let mut available = numbers.to_vec();
        used.sort();
        available.sort();
        if used != available {
            return wrong("the equation must use each given number exactly once".into(), Some(used_text), None);
        }
        if value != BigRational::from_integer(target.clone()) {
            return wrong(
                format!("the equation equals {value}, not {target}"),
                Some(used_text),
                Some(value.to_string()),
            );
        }
        Verdict::reward(
            self.options.score,
            json!({ "equation": equation, "why": "correct", "numbers_used": used_text, "value": value.to_string() }),
        )
    }
}

fn integer(value: &Value, name: &str) -> Result<BigInt, CheckError> {
    let bad = || CheckError::BadField { field: name.to_string(), expected: "an integer".into() };
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Ok(BigInt::from(i))
            } else if let Some(u) = n.as_u64() {
                Ok(BigInt::from(u))
            } else {
                match n.as_f64() {
                    Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => Ok(BigInt::from(f as i64)),
                    _ => Err(bad()),
                }
            }
        }
        Value::String(s) => s.trim().parse().map_err(|_| bad()),
        _ => Err(bad()),
    }
}

impl Checker for CountdownChecker {
    fn name(&self) -> &str {
        "countdown"
    }

    fn required_fields(&self) -> Vec<String> {
        vec!["target".into(), "numbers".into()]
    }

    fn check(&self, completion: &str, fields: &ProblemFields) -> Result<Verdict, CheckError> {
        let target = integer(field(fields, "target")?, "target")?;
        let numbers = match field(fields, "numbers")? {
            Value::Array(items) => items.iter().map(|v| integer(v, "numbers")).collect::<Result<Vec<_>, _>>()?,
            _ => return Err(CheckError::BadField { field: "numbers".into(), expected: "an array of integers".into() }),
        };
        if numbers.iter().any(|n| n.sign() == num_bigint::Sign::Minus) {
            return Ok(Verdict::skip("negative number in `numbers`", json!({ "numbers": field(fields, "numbers")? })));
        }
        Ok(self.verdict(completion, &target, &numbers))
    }
}
