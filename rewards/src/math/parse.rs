//! Tokens -> [`Expr`], by recursive descent with a depth bound.
//!
//! Grammar (lowest precedence first):
//! ```text
//! list     := relation ((',' | ';' | "or" | "and") relation)*   (with both `,` and `;`: groups at `;`)
//! relation := union (relop union)*
//! union    := sum ('\cup' sum)*
//! sum      := term (('+' | '-' | '\pm') term)*
//! term     := unary (('*' | '/') unary | <implicit product> power)*
//! unary    := ('-' | '+') unary | power
//! power    := postfix ('^' unary)?                 (right-associative, -2^2 = -(2^2))
//! postfix  := primary '!'*
//! primary  := number | variable | constant | function argument | \frac{a}{b} | \sqrt[n]{x}
//!           | '(' list ')' | '[' list ')' | '{' list '}' | '\{' list '\}' | '|' sum '|' | matrix
//! ```

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Zero};

use super::lex::{is_unit_word, Const, Func, Rel, Tok};
use super::MathError;

/// Recursion bound (about 7 levels per parenthesis: ~55 nested parentheses).
const MAX_DEPTH: usize = 400;

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An exact number; `float` is true when it was written as a decimal literal (`0.5`).
    Num {
        value: BigRational,
        float: bool,
    },
    Const(Const),
    Var(String),
    Neg(Box<Expr>),
    Add(Box<Expr>, Box<Expr>),
    Sub(Box<Expr>, Box<Expr>),
    /// `a ± b`: expanded into two answers before comparison.
    PlusMinus(Box<Expr>, Box<Expr>),
    Mul(Box<Expr>, Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    Func(Func, Box<Expr>),
    /// `\log_b x`
    Log(Box<Expr>, Box<Expr>),
    /// `\sqrt[n]{x}`
    Root(Box<Expr>, Box<Expr>),
    Binom(Box<Expr>, Box<Expr>),
    Abs(Box<Expr>),
    Factorial(Box<Expr>),
    /// `(a, b)`, `[a, b)`, ...: a tuple or an interval, with its brackets.
    Group {
        open: char,
        close: char,
        items: Vec<Expr>,
    },
    /// `\{a, b\}` (or `{a, b}`): unordered.
    Set(Vec<Expr>),
    /// A bare `a, b, c` list at the top level: compared as a set.
    List(Vec<Expr>),
    Union(Vec<Expr>),
    Relation(Box<Expr>, Rel, Box<Expr>),
    Matrix(Vec<Vec<Expr>>),
}

impl Expr {
    /// A copy with every subexpression for which `f` gives a replacement replaced (outermost
    /// first; a replacement is not searched further).
    pub fn rewrite(&self, f: &mut impl FnMut(&Expr) -> Option<Expr>) -> Expr {
        if let Some(replaced) = f(self) {
            return replaced;
        }
        let mut one = |a: &Expr| Box::new(a.rewrite(f));
        match self {
            Expr::Num { .. } | Expr::Const(_) | Expr::Var(_) => self.clone(),
            Expr::Neg(a) => Expr::Neg(one(a)),
            Expr::Func(func, a) => Expr::Func(*func, one(a)),
            Expr::Abs(a) => Expr::Abs(one(a)),
            Expr::Factorial(a) => Expr::Factorial(one(a)),
            Expr::Add(a, b) => Expr::Add(one(a), one(b)),
            Expr::Sub(a, b) => Expr::Sub(one(a), one(b)),
            Expr::PlusMinus(a, b) => Expr::PlusMinus(one(a), one(b)),
            Expr::Mul(a, b) => Expr::Mul(one(a), one(b)),
            Expr::Div(a, b) => Expr::Div(one(a), one(b)),
            Expr::Pow(a, b) => Expr::Pow(one(a), one(b)),
            Expr::Log(a, b) => Expr::Log(one(a), one(b)),
            Expr::Root(a, b) => Expr::Root(one(a), one(b)),
            Expr::Binom(a, b) => Expr::Binom(one(a), one(b)),
            Expr::Relation(a, rel, b) => Expr::Relation(one(a), *rel, one(b)),
            Expr::Group { open, close, items } => {
                Expr::Group { open: *open, close: *close, items: items.iter().map(|x| x.rewrite(f)).collect() }
            }
            Expr::Set(items) => Expr::Set(items.iter().map(|x| x.rewrite(f)).collect()),
            Expr::List(items) => Expr::List(items.iter().map(|x| x.rewrite(f)).collect()),
            Expr::Union(items) => Expr::Union(items.iter().map(|x| x.rewrite(f)).collect()),
            Expr::Matrix(rows) => {
                Expr::Matrix(rows.iter().map(|row| row.iter().map(|x| x.rewrite(f)).collect()).collect())
            }
        }
    }
}

pub fn parse(tokens: &[Tok]) -> Result<Expr, MathError> {
    // Trailing words (units, "units", "dollars") are dropped; leading filler too.
    let mut end = tokens.len();
    while end > 0 && matches!(&tokens[end - 1], Tok::Word(_)) {
        end -= 1;
    }
    let mut start = 0;
    while start < end && matches!(&tokens[start], Tok::Word(w) if !is_unit_word(w)) {
        start += 1;
    }
    if start >= end {
        return Err(MathError::Syntax("no expression".into()));
    }
    let mut parser = Parser { toks: &tokens[start..end], pos: 0, depth: 0, abs_depth: 0 };
    let expr = parser.list()?;
    if parser.pos != parser.toks.len() {
        return Err(MathError::Syntax(format!("unexpected {:?}", parser.toks[parser.pos])));
    }
    Ok(expr)
}

struct Parser<'a> {
    toks: &'a [Tok],
    pos: usize,
    depth: usize,
    abs_depth: usize,
}

fn bx(e: Expr) -> Box<Expr> {
    Box::new(e)
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&'a Tok> {
        self.toks.get(self.pos)
    }

    fn next(&mut self) -> Option<&'a Tok> {
        let t = self.toks.get(self.pos);
        self.pos += 1;
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn enter(&mut self) -> Result<(), MathError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(MathError::TooDeep);
        }
        Ok(())
    }

    fn is_separator(&self) -> bool {
        match self.peek() {
            Some(Tok::Comma) | Some(Tok::Semicolon) => true,
            Some(Tok::Word(w)) => matches!(w.as_str(), "or" | "and"),
            _ => false,
        }
    }

    /// Skips unit words that end an item (`5 cm, 6 cm`).
    fn skip_units(&mut self) {
        while let Some(Tok::Word(w)) = self.peek() {
            if matches!(w.as_str(), "or" | "and") {
                break;
            }
            let next = self.toks.get(self.pos + 1);
            let ends_item = matches!(
                next,
                None | Some(Tok::Comma)
                    | Some(Tok::Semicolon)
                    | Some(Tok::Close(_))
                    | Some(Tok::SetClose)
                    | Some(Tok::BraceClose)
                    | Some(Tok::Word(_))
                    | Some(Tok::Rel(_))
            );
            if is_unit_word(w) || ends_item {
                self.pos += 1;
                // `cm^2`, `m^{3}`
                if self.peek() == Some(&Tok::Caret) {
                    match (self.toks.get(self.pos + 1), self.toks.get(self.pos + 2), self.toks.get(self.pos + 3)) {
                        (Some(Tok::Num(_)), _, _) => self.pos += 2,
                        (Some(Tok::BraceOpen), Some(Tok::Num(_)), Some(Tok::BraceClose)) => self.pos += 4,
                        _ => {}
                    }
                }
            } else {
                break;
            }
        }
    }

    fn list(&mut self) -> Result<Expr, MathError> {
        self.enter()?;
        let first = self.relation()?;
        self.skip_units();
        if !self.is_separator() {
            self.depth -= 1;
            return Ok(first);
        }
        // `p = 5, q = 2; p = 7, q = 2`: where both `,` and `;` separate, `;` separates groups.
        let mut groups = vec![vec![first]];
        let (mut commas, mut semicolons) = (false, false);
        while self.is_separator() {
            let mut new_group = false;
            // "x = 1 or x = 2", "1, and 2"
            while self.is_separator() {
                match self.peek() {
                    Some(Tok::Semicolon) => {
                        semicolons = true;
                        new_group = true;
                    }
                    Some(Tok::Comma) => commas = true,
                    _ => {}
                }
                self.pos += 1;
            }
            if new_group {
                groups.push(Vec::new());
            }
            groups.last_mut().expect("a group").push(self.relation()?);
            self.skip_units();
        }
        self.depth -= 1;
        if !(commas && semicolons) {
            return Ok(Expr::List(groups.into_iter().flatten().collect()));
        }
        Ok(Expr::List(
            groups
                .into_iter()
                .map(|mut group| if group.len() == 1 { group.pop().expect("one item") } else { Expr::List(group) })
                .collect(),
        ))
    }

    fn relation(&mut self) -> Result<Expr, MathError> {
        self.enter()?;
        let mut lhs = self.union()?;
        self.skip_units();
        while let Some(Tok::Rel(rel)) = self.peek() {
            self.pos += 1;
            let rhs = self.union()?;
            self.skip_units();
            lhs = Expr::Relation(bx(lhs), *rel, bx(rhs));
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn union(&mut self) -> Result<Expr, MathError> {
        let first = self.sum()?;
        if self.peek() != Some(&Tok::Cup) {
            return Ok(first);
        }
        let mut items = vec![first];
        while self.eat(&Tok::Cup) {
            items.push(self.sum()?);
        }
        Ok(Expr::Union(items))
    }

    fn sum(&mut self) -> Result<Expr, MathError> {
        self.enter()?;
        let mut lhs = self.term()?;
        loop {
            match self.peek() {
                Some(Tok::Plus) => {
                    self.pos += 1;
                    lhs = Expr::Add(bx(lhs), bx(self.term()?));
                }
                Some(Tok::Minus) => {
                    self.pos += 1;
                    lhs = Expr::Sub(bx(lhs), bx(self.term()?));
                }
                Some(Tok::PlusMinus) => {
                    self.pos += 1;
                    lhs = Expr::PlusMinus(bx(lhs), bx(self.term()?));
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(lhs)
    }

    fn starts_primary(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_) | Tok::Var(_) | Tok::Func(_) | Tok::Open('(') | Tok::BraceOpen | Tok::BeginMatrix) => true,
            Some(Tok::Const(c)) => *c != Const::EmptySet,
            Some(Tok::Pipe) => self.abs_depth == 0,
            _ => false,
        }
    }

    fn term(&mut self) -> Result<Expr, MathError> {
        self.enter()?;
        let mut lhs = self.unary()?;
        loop {
            match self.peek() {
                Some(Tok::Times) => {
                    self.pos += 1;
                    lhs = Expr::Mul(bx(lhs), bx(self.unary()?));
                }
                Some(Tok::Divide) => {
                    self.pos += 1;
                    lhs = Expr::Div(bx(lhs), bx(self.unary()?));
                }
                _ if self.starts_primary() => {
                    let rhs = self.power()?;
                    lhs = match (lhs, rhs) {
                        // Mixed number: `2\frac{1}{2}` is 2 + 1/2.
                        (Expr::Num { value: whole, float: false }, Expr::Div(num, den))
                            if whole.is_integer() && is_int_lit(&num) && is_int_lit(&den) && self.mixed_ok() =>
                        {
                            Expr::Add(bx(Expr::Num { value: whole, float: false }), bx(Expr::Div(num, den)))
                        }
                        (lhs, rhs) => Expr::Mul(bx(lhs), bx(rhs)),
                    };
                }
                _ => break,
            }
        }
        self.depth -= 1;
        Ok(lhs)
    }

    /// A mixed number only when the fraction ended the term (`2\frac12 x` stays a product).
    fn mixed_ok(&self) -> bool {
        !self.starts_primary() && !matches!(self.peek(), Some(Tok::Caret))
    }

    fn unary(&mut self) -> Result<Expr, MathError> {
        self.enter()?;
        let e = match self.peek() {
            Some(Tok::Minus) => {
                self.pos += 1;
                Expr::Neg(bx(self.unary()?))
            }
            Some(Tok::Plus) => {
                self.pos += 1;
                self.unary()?
            }
            Some(Tok::PlusMinus) => {
                self.pos += 1;
                let operand = self.unary()?;
                Expr::PlusMinus(bx(Expr::Num { value: BigRational::zero(), float: false }), bx(operand))
            }
            _ => self.power()?,
        };
        self.depth -= 1;
        Ok(e)
    }

    fn power(&mut self) -> Result<Expr, MathError> {
        self.enter()?;
        let base = self.postfix()?;
        let e = if self.eat(&Tok::Caret) {
            let exponent = self.exponent()?;
            let mut e = Expr::Pow(bx(base), bx(exponent));
            while self.eat(&Tok::Bang) {
                e = Expr::Factorial(bx(e));
            }
            e
        } else {
            base
        };
        self.depth -= 1;
        Ok(e)
    }

    /// The exponent after `^`: a brace group or one primary. A multi-digit number counts whole
    /// (`2^10` is 1024, as in plain text), unlike TeX's one-character rule.
    fn exponent(&mut self) -> Result<Expr, MathError> {
        match self.peek() {
            Some(Tok::Minus) => {
                self.pos += 1;
                Ok(Expr::Neg(bx(self.exponent()?)))
            }
            Some(Tok::Plus) => {
                self.pos += 1;
                self.exponent()
            }
            _ => self.power(),
        }
    }

    fn postfix(&mut self) -> Result<Expr, MathError> {
        let mut e = self.primary()?;
        while self.eat(&Tok::Bang) {
            e = Expr::Factorial(bx(e));
        }
        Ok(e)
    }

    /// A `{...}` group or, without braces, a single primary (`\frac12`, `\sqrt2`, `\sqrt x`).
    fn argument(&mut self) -> Result<Expr, MathError> {
        if self.eat(&Tok::BraceOpen) {
            let e = self.list()?;
            self.expect(&Tok::BraceClose)?;
            return Ok(e);
        }
        match self.peek() {
            Some(Tok::Num(text)) if !text.contains('.') && text.len() > 1 => {
                Err(MathError::Syntax("multi-digit argument without braces".into()))
            }
            _ => self.postfix(),
        }
    }

    fn expect(&mut self, tok: &Tok) -> Result<(), MathError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(MathError::Syntax(format!("expected {tok:?}, found {:?}", self.peek())))
        }
    }

    fn primary(&mut self) -> Result<Expr, MathError> {
        self.enter()?;
        let tok = self.next().ok_or_else(|| MathError::Syntax("unexpected end".into()))?;
        let e = match tok {
            Tok::Num(text) => Expr::Num { value: parse_decimal(text)?, float: text.contains(['.', 'e', 'E']) },
            Tok::Var(name) => Expr::Var(name.clone()),
            Tok::Const(c) => Expr::Const(*c),
            Tok::Func(Func::Frac) => {
                let num = self.argument()?;
                let den = self.argument()?;
                Expr::Div(bx(num), bx(den))
            }
            Tok::Func(Func::Binom) => {
                let n = self.argument()?;
                let k = self.argument()?;
                Expr::Binom(bx(n), bx(k))
            }
            Tok::Func(Func::Sqrt) => {
                if self.eat(&Tok::Open('[')) {
                    let index = self.sum()?;
                    self.expect(&Tok::Close(']'))?;
                    let radicand = self.argument()?;
                    Expr::Root(bx(index), bx(radicand))
                } else {
                    Expr::Func(Func::Sqrt, bx(self.argument()?))
                }
            }
            Tok::Func(Func::Log) => {
                let base = if self.eat(&Tok::Underscore) { Some(self.argument()?) } else { None };
                let power = self.func_power()?;
                let arg = self.func_argument()?;
                let e = match base {
                    Some(b) => Expr::Log(bx(b), bx(arg)),
                    None => Expr::Func(Func::Log, bx(arg)),
                };
                apply_power(e, power)
            }
            Tok::Func(f) => {
                let power = self.func_power()?;
                let arg = self.func_argument()?;
                apply_power(Expr::Func(*f, bx(arg)), power)
            }
            Tok::Open(open) => {
                if let Some(Tok::Close(close)) = self.peek() {
                    self.pos += 1;
                    Expr::Group { open: *open, close: *close, items: vec![] }
                } else {
                    let inner = self.list()?;
                    let close = match self.next() {
                        Some(Tok::Close(c)) => *c,
                        other => return Err(MathError::Syntax(format!("expected `)` or `]`, found {other:?}"))),
                    };
                    match inner {
                        Expr::List(items) => Expr::Group { open: *open, close, items },
                        single if *open == '(' && close == ')' => single,
                        single => Expr::Group { open: *open, close, items: vec![single] },
                    }
                }
            }
            Tok::BraceOpen => {
                if self.eat(&Tok::BraceClose) {
                    Expr::Set(vec![])
                } else {
                    let inner = self.list()?;
                    self.expect(&Tok::BraceClose)?;
                    match inner {
                        Expr::List(items) => Expr::Set(items),
                        single => single,
                    }
                }
            }
            Tok::SetOpen => {
                if self.eat(&Tok::SetClose) {
                    Expr::Set(vec![])
                } else {
                    let inner = self.list()?;
                    self.expect(&Tok::SetClose)?;
                    match inner {
                        Expr::List(items) => Expr::Set(items),
                        single => Expr::Set(vec![single]),
                    }
                }
            }
            Tok::Pipe => {
                self.abs_depth += 1;
                let inner = self.sum();
                self.abs_depth -= 1;
                let inner = inner?;
                self.expect(&Tok::Pipe)?;
                Expr::Abs(bx(inner))
            }
            Tok::BeginMatrix => self.matrix()?,
            other => return Err(MathError::Syntax(format!("unexpected {other:?}"))),
        };
        self.depth -= 1;
        Ok(e)
    }

    /// `\sin^2 x`: a power written between a function and its argument.
    fn func_power(&mut self) -> Result<Option<Expr>, MathError> {
        if self.eat(&Tok::Caret) {
            Ok(Some(self.exponent()?))
        } else {
            Ok(None)
        }
    }

    /// `\sin(x)`, `\sin{x}`, `\sin x`, `\sin 2x` (a product of primaries, as usually meant).
    fn func_argument(&mut self) -> Result<Expr, MathError> {
        match self.peek() {
            Some(Tok::Open('(')) | Some(Tok::BraceOpen) => self.power(),
            _ => {
                let mut e = self.power()?;
                while matches!(self.peek(), Some(Tok::Var(_)) | Some(Tok::Const(Const::Pi))) {
                    e = Expr::Mul(bx(e), bx(self.power()?));
                }
                Ok(e)
            }
        }
    }

    fn matrix(&mut self) -> Result<Expr, MathError> {
        let mut rows = vec![];
        let mut row = vec![];
        loop {
            if self.eat(&Tok::EndMatrix) {
                if !row.is_empty() {
                    rows.push(row);
                }
                break;
            }
            row.push(self.sum()?);
            if self.eat(&Tok::Amp) {
                continue;
            }
            if self.eat(&Tok::RowSep) {
                rows.push(std::mem::take(&mut row));
                continue;
            }
            if self.peek() != Some(&Tok::EndMatrix) {
                return Err(MathError::Syntax("bad matrix".into()));
            }
        }
        Ok(Expr::Matrix(rows))
    }
}

fn apply_power(e: Expr, power: Option<Expr>) -> Expr {
    match power {
        // \sin^{-1} x is arcsin x
        Some(Expr::Neg(p)) if matches!(&*p, Expr::Num { value, .. } if value.is_one()) => match e {
            Expr::Func(Func::Sin, a) => Expr::Func(Func::Asin, a),
            Expr::Func(Func::Cos, a) => Expr::Func(Func::Acos, a),
            Expr::Func(Func::Tan, a) => Expr::Func(Func::Atan, a),
            other => Expr::Pow(bx(other), bx(Expr::Neg(p))),
        },
        Some(p) => Expr::Pow(bx(e), bx(p)),
        None => e,
    }
}

fn is_int_lit(e: &Expr) -> bool {
    matches!(e, Expr::Num { value, float: false } if value.is_integer())
}

/// Largest decimal exponent of a literal in scientific notation (`1e300`).
const MAX_DECIMAL_EXPONENT: u32 = 1000;

/// `"12.50"` -> 25/2 and `"2.5e3"` -> 2500, exactly.
pub fn parse_decimal(text: &str) -> Result<BigRational, MathError> {
    let bad = || MathError::Syntax(format!("bad number `{text}`"));
    let (mantissa, exponent) = match text.find(['e', 'E']) {
        Some(at) => (&text[..at], text[at + 1..].parse::<i32>().map_err(|_| bad())?),
        None => (text, 0),
    };
    if exponent.unsigned_abs() > MAX_DECIMAL_EXPONENT {
        return Err(MathError::TooLong(text.len()));
    }
    let (whole, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{frac}");
    let digits = if digits.is_empty() { "0".to_string() } else { digits };
    let numer: BigInt = digits.parse().map_err(|_| bad())?;
    let shift = exponent - frac.len() as i32;
    let scale = num_traits::pow(BigInt::from(10u32), shift.unsigned_abs() as usize);
    Ok(if shift >= 0 { BigRational::from_integer(numer * scale) } else { BigRational::new(numer, scale) })
}
