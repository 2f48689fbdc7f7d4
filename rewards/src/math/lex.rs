//! LaTeX-ish answer text -> tokens, with the normalisations applied on the way: `\dfrac`/`\tfrac`,
//! `\left`/`\right`, spacing commands (`\!`, `\,`, `\quad`, `~`), `^\circ`, `\%`, `\$`, `$`,
//! thousands separators, `\text{..}` / `\mbox{..}` (units and words), Unicode operators.

use super::MathError;

/// Functions of one argument (plus `log`, which may carry a base).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Func {
    Sin,
    Cos,
    Tan,
    Cot,
    Sec,
    Csc,
    Asin,
    Acos,
    Atan,
    Sinh,
    Cosh,
    Tanh,
    Ln,
    Log,
    Exp,
    Sqrt,
    Frac,
    Binom,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Const {
    Pi,
    E,
    I,
    Infinity,
    EmptySet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A numeric literal: digits, optional `.digits` (separators removed).
    Num(String),
    Var(String),
    Const(Const),
    Func(Func),
    Plus,
    Minus,
    PlusMinus,
    Times,
    Divide,
    Caret,
    Underscore,
    Bang,
    Comma,
    Semicolon,
    Pipe,
    Rel(Rel),
    Cup,
    Open(char),
    Close(char),
    /// `\{`
    SetOpen,
    /// `\}`
    SetClose,
    /// `{`
    BraceOpen,
    /// `}`
    BraceClose,
    /// `&` in a matrix
    Amp,
    /// `\\` in a matrix
    RowSep,
    BeginMatrix,
    EndMatrix,
    /// A word: `\text{cm}`, or a bare multi-letter word that is no function (units, "or", "and").
    Word(String),
}

/// Longest text the tokenizer accepts for one answer.
pub const MAX_ANSWER_BYTES: usize = 2000;
/// Most tokens one answer may have.
const MAX_TOKENS: usize = 1000;

const UNITS: &[&str] = &[
    "cm", "mm", "km", "m", "kg", "g", "mg", "lb", "lbs", "oz", "ft", "feet", "foot", "inch", "inches", "in", "yd",
    "yards", "mi", "miles", "mile", "meter", "meters", "metres", "units", "unit", "sq", "square", "cubic", "degrees",
    "degree", "deg", "dollars", "dollar", "cents", "cent", "hours", "hour", "hrs", "hr", "minutes", "minute", "min",
    "mins", "seconds", "second", "sec", "s", "days", "day", "weeks", "week", "years", "year", "mph", "percent",
    "points", "point", "pounds", "ounces", "liters", "litres", "l", "ml", "gallons", "people", "students", "ways",
    "times", "rad", "radians",
];

fn func_named(name: &str) -> Option<Func> {
    Some(match name {
        "sin" => Func::Sin,
        "cos" => Func::Cos,
        "tan" | "tg" => Func::Tan,
        "cot" | "ctg" => Func::Cot,
        "sec" => Func::Sec,
        "csc" => Func::Csc,
        "arcsin" | "asin" => Func::Asin,
        "arccos" | "acos" => Func::Acos,
        "arctan" | "atan" => Func::Atan,
        "sinh" => Func::Sinh,
        "cosh" => Func::Cosh,
        "tanh" => Func::Tanh,
        "ln" => Func::Ln,
        "log" | "lg" => Func::Log,
        "exp" => Func::Exp,
        "sqrt" => Func::Sqrt,
        "frac" | "dfrac" | "tfrac" | "cfrac" => Func::Frac,
        "binom" | "dbinom" | "tbinom" | "choose" => Func::Binom,
        _ => return None,
    })
}

const GREEK: &[&str] = &[
    "alpha",
    "beta",
    "gamma",
    "delta",
    "epsilon",
    "varepsilon",
    "zeta",
    "eta",
    "theta",
    "vartheta",
    "iota",
    "kappa",
    "lambda",
    "mu",
    "nu",
    "xi",
    "rho",
    "sigma",
    "tau",
    "upsilon",
    "phi",
    "varphi",
    "chi",
    "psi",
    "omega",
    "Gamma",
    "Delta",
    "Theta",
    "Lambda",
    "Xi",
    "Sigma",
    "Phi",
    "Psi",
    "Omega",
];

/// Whether `word` (a bare run of letters) is a unit or a filler word that may follow an answer.
pub fn is_unit_word(word: &str) -> bool {
    let lower = word.to_ascii_lowercase();
    UNITS.contains(&lower.as_str())
}

pub fn tokenize(input: &str) -> Result<Vec<Tok>, MathError> {
    if input.len() > MAX_ANSWER_BYTES {
        return Err(MathError::TooLong(input.len()));
    }
    let chars: Vec<char> = input.chars().collect();
    // Outside matrices `\\` before letters is a command escaped twice (`\\frac`, as text copied
    // from a JSON or Python string often has); in a matrix it ends a row.
    let doubled_commands = !input.contains("\\begin");
    let mut lexer = Lexer { chars, pos: 0, out: Vec::new(), doubled_commands };
    lexer.run()?;
    Ok(lexer.out)
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    out: Vec<Tok>,
    /// `\\frac` is `\frac` (no matrix in the text).
    doubled_commands: bool,
}

impl Lexer {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<char> {
        self.chars.get(self.pos + offset).copied()
    }

    fn push(&mut self, tok: Tok) -> Result<(), MathError> {
        if self.out.len() >= MAX_TOKENS {
            return Err(MathError::TooLong(self.out.len()));
        }
        self.out.push(tok);
        Ok(())
    }

    fn skip_spaces(&mut self) {
        while matches!(self.peek(), Some(c) if c.is_whitespace() || c == '~') {
            self.pos += 1;
        }
    }

    /// Reads `{...}` with brace matching, returning the raw content; the cursor is on `{`.
    fn raw_group(&mut self) -> Result<String, MathError> {
        debug_assert_eq!(self.peek(), Some('{'));
        let start = self.pos + 1;
        let mut depth = 0usize;
        while let Some(c) = self.peek() {
            self.pos += 1;
            match c {
                '\\' => self.pos += 1,
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        let end = self.pos - 1;
                        return Ok(self.chars[start..end.max(start)].iter().collect());
                    }
                }
                _ => {}
            }
        }
        Err(MathError::Syntax("unbalanced braces".into()))
    }

    fn run(&mut self) -> Result<(), MathError> {
        while let Some(c) = self.peek() {
            match c {
                c if c.is_whitespace() || c == '~' || c == '$' => self.pos += 1,
                '0'..='9' => self.number()?,
                '.' if matches!(self.peek_at(1), Some('0'..='9')) => self.number()?,
                'a'..='z' | 'A'..='Z' => self.word()?,
                '\\' => self.command()?,
                '+' => self.single(Tok::Plus)?,
                '-' | '−' | '–' => self.single(Tok::Minus)?,
                '±' => self.single(Tok::PlusMinus)?,
                '*' | '×' | '·' | '⋅' => self.single(Tok::Times)?,
                '/' | '÷' => self.single(Tok::Divide)?,
                '^' => {
                    self.pos += 1;
                    if !self.degree_marker() {
                        self.push(Tok::Caret)?;
                    }
                }
                '_' => self.single(Tok::Underscore)?,
                '!' if self.peek_at(1) == Some('=') => {
                    self.pos += 1;
                    self.single(Tok::Rel(Rel::Ne))?
                }
                '!' => self.single(Tok::Bang)?,
                ',' => self.single(Tok::Comma)?,
                ';' => self.single(Tok::Semicolon)?,
                '|' => self.single(Tok::Pipe)?,
                '=' => self.single(Tok::Rel(Rel::Eq))?,
                '<' => {
                    if self.peek_at(1) == Some('=') {
                        self.pos += 1;
                        self.single(Tok::Rel(Rel::Le))?
                    } else {
                        self.single(Tok::Rel(Rel::Lt))?
                    }
                }
                '>' => {
                    if self.peek_at(1) == Some('=') {
                        self.pos += 1;
                        self.single(Tok::Rel(Rel::Ge))?
                    } else {
                        self.single(Tok::Rel(Rel::Gt))?
                    }
                }
                '≤' => self.single(Tok::Rel(Rel::Le))?,
                '≥' => self.single(Tok::Rel(Rel::Ge))?,
                '≠' => self.single(Tok::Rel(Rel::Ne))?,
                '≈' => {
                    self.pos += 1;
                    self.approx()?
                }
                '∪' => self.single(Tok::Cup)?,
                '∞' => self.single(Tok::Const(Const::Infinity))?,
                'π' => self.single(Tok::Const(Const::Pi))?,
                '√' => self.single(Tok::Func(Func::Sqrt))?,
                '∅' => self.single(Tok::Const(Const::EmptySet))?,
                '°' | '%' | '\'' | '"' | '’' | '€' | '£' | '¥' => self.pos += 1,
                '²' | '³' => {
                    self.push(Tok::Caret)?;
                    self.single(Tok::Num(if c == '²' { "2" } else { "3" }.into()))?
                }
                '(' | '[' => self.single(Tok::Open(c))?,
                ')' | ']' => self.single(Tok::Close(c))?,
                '{' => {
                    // `{,}` (or `{, }`) is a thousands separator inside a number; elsewhere a comma.
                    if let Some(len) = self.braced_comma() {
                        self.pos += len;
                        if matches!(self.out.last(), Some(Tok::Num(_))) && self.three_digits_follow(self.pos) {
                            self.continue_number()?;
                        } else {
                            self.push(Tok::Comma)?;
                        }
                    } else {
                        self.single(Tok::BraceOpen)?
                    }
                }
                '}' => self.single(Tok::BraceClose)?,
                '&' => self.single(Tok::Amp)?,
                // A ratio `3:4` is a quotient (`12:00` has no value); a colon elsewhere is
                // punctuation.
                ':' if self.ratio_colon() => self.single(Tok::Divide)?,
                ':' => self.pos += 1,
                '.' => self.pos += 1,
                '?' => return Err(MathError::Syntax("`?` in answer".into())),
                other => {
                    if other.is_alphabetic() {
                        return Err(MathError::Syntax(format!("unexpected letter `{other}`")));
                    }
                    return Err(MathError::Syntax(format!("unexpected character `{other}`")));
                }
            }
        }
        Ok(())
    }

    /// A colon between two operands: `3:4`, `x : y`.
    fn ratio_colon(&self) -> bool {
        let operand_before = matches!(
            self.out.last(),
            Some(Tok::Num(_) | Tok::Var(_) | Tok::Const(_) | Tok::Close(_) | Tok::BraceClose)
        );
        let next = self.chars[self.pos + 1..].iter().find(|c| !c.is_whitespace()).copied();
        operand_before && next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '(' || c == '\\')
    }

    /// After `\approx` / `≈`: `x \approx 11` names the value, read as `x = 11`; after anything else
    /// (`\frac13 \approx 0.33`) the approximation is dropped with the rest of the text.
    fn approx(&mut self) -> Result<(), MathError> {
        let item_start = self.out.iter().rposition(|t| matches!(t, Tok::Comma | Tok::Semicolon)).map_or(0, |k| k + 1);
        if matches!(&self.out[item_start..], [Tok::Var(_)]) {
            return self.push(Tok::Rel(Rel::Eq));
        }
        self.pos = self.chars.len();
        Ok(())
    }

    fn single(&mut self, tok: Tok) -> Result<(), MathError> {
        self.pos += 1;
        self.push(tok)
    }

    /// After `^`: `\circ`, `{\circ}`, `{}^\circ` mean degrees and are dropped. Returns whether
    /// the marker was consumed.
    fn degree_marker(&mut self) -> bool {
        let rest: String = self.chars[self.pos..self.chars.len().min(self.pos + 12)].iter().collect();
        let trimmed = rest.trim_start();
        let skipped = rest.len() - trimmed.len();
        for marker in ["\\circ", "{\\circ}", "{ \\circ }", "{\\circ }", "{ \\circ}", "\\degree", "{\\degree}"] {
            if let Some(after) = trimmed.strip_prefix(marker) {
                let is_cmd_prefix = marker.ends_with(|c: char| c.is_ascii_alphabetic())
                    && after.starts_with(|c: char| c.is_ascii_alphabetic());
                if !is_cmd_prefix {
                    self.pos += skipped + marker.chars().count();
                    return true;
                }
            }
        }
        false
    }

    /// The length of `{,}` with optional spaces inside (`{, }`) at the cursor.
    fn braced_comma(&self) -> Option<usize> {
        let mut k = 1;
        while self.peek_at(k).is_some_and(|c| c == ' ') {
            k += 1;
        }
        if self.peek_at(k) != Some(',') {
            return None;
        }
        k += 1;
        while self.peek_at(k).is_some_and(|c| c == ' ') {
            k += 1;
        }
        (self.peek_at(k) == Some('}')).then_some(k + 1)
    }

    fn three_digits_follow(&self, at: usize) -> bool {
        (0..3).all(|k| matches!(self.chars.get(at + k), Some('0'..='9')))
            && !matches!(self.chars.get(at + 3), Some('0'..='9'))
    }

    /// Right after `\frac`, `\binom` or `\sqrt` without braces an argument is one digit
    /// (`\frac13` = 1/3), as in TeX.
    fn one_digit_argument(&self) -> bool {
        let n = self.out.len();
        let takes_args = |t: &Tok| matches!(t, Tok::Func(Func::Frac | Func::Binom | Func::Sqrt));
        match (n.checked_sub(2).map(|i| &self.out[i]), self.out.last()) {
            (_, Some(t)) if takes_args(t) => true,
            (Some(Tok::Func(Func::Frac | Func::Binom)), Some(Tok::Num(d))) => d.len() == 1,
            _ => false,
        }
    }

    fn number(&mut self) -> Result<(), MathError> {
        if self.one_digit_argument() {
            let c = self.chars[self.pos];
            self.pos += 1;
            return self.push(Tok::Num(c.to_string()));
        }
        let mut text = String::new();
        let mut first_group = 0usize;
        while let Some(c @ '0'..='9') = self.peek() {
            text.push(c);
            first_group += 1;
            self.pos += 1;
        }
        // Thousands separators: `1,000,000` (no space after the comma), `1\,000`, `1{,}000`,
        // `1 000` — only when the first group has 1-3 digits and every later group exactly 3.
        // In a bracketed list (`(12,102)`), a comma separates items.
        let in_list = matches!(self.out.last(), Some(Tok::Open(_) | Tok::Comma | Tok::BraceOpen | Tok::SetOpen));
        if (1..=3).contains(&first_group) {
            while let Some(sep_len) = self.thousands_separator(in_list) {
                if !self.three_digits_follow(self.pos + sep_len) {
                    break;
                }
                self.pos += sep_len;
                for _ in 0..3 {
                    text.push(self.chars[self.pos]);
                    self.pos += 1;
                }
            }
        }
        if self.peek() == Some('.') && matches!(self.peek_at(1), Some('0'..='9')) {
            text.push('.');
            self.pos += 1;
            while let Some(c @ '0'..='9') = self.peek() {
                text.push(c);
                self.pos += 1;
            }
        }
        self.scientific_exponent(&mut text);
        if text.len() > 400 {
            return Err(MathError::TooLong(text.len()));
        }
        self.push(Tok::Num(text))
    }

    /// `e3`, `E-7`, `e+12` right after a number's digits (`1e3` = 1000, `2.5e3` = 2500), when no
    /// letter follows the exponent's digits (`2e3x` stays 2·e·3·x).
    fn scientific_exponent(&mut self, text: &mut String) {
        if !matches!(self.peek(), Some('e' | 'E')) {
            return;
        }
        let sign = usize::from(matches!(self.peek_at(1), Some('+' | '-')));
        let digits = (0..).take_while(|&k| matches!(self.peek_at(1 + sign + k), Some('0'..='9'))).count();
        if digits == 0 || matches!(self.peek_at(1 + sign + digits), Some(c) if c.is_alphabetic()) {
            return;
        }
        let end = self.pos + 1 + sign + digits;
        text.extend(&self.chars[self.pos..end]);
        self.pos = end;
    }

    /// The length of a thousands separator at the cursor: `,` (not followed by a space),
    /// `{,}`, `\,`, `\!`, a space, or a comma followed by `\!` / `\,` and an optional space.
    fn thousands_separator(&self, in_list: bool) -> Option<usize> {
        let at = |k: usize| self.peek_at(k);
        let mut len = 0;
        let mut comma = false;
        if at(0) == Some(',') && !in_list {
            len = 1;
            comma = true;
        } else if at(0) == Some('{') && at(1) == Some(',') && at(2) == Some('}') {
            len = 3;
            comma = true;
        }
        let mut spacing = false;
        if at(len) == Some('\\') && matches!(at(len + 1), Some(',' | '!' | ' ')) {
            len += 2;
            spacing = true;
        }
        if at(len) == Some(' ') && (spacing || !comma) {
            len += 1;
        }
        (len > 0).then_some(len)
    }

    /// `{,}` followed by three digits after a number: glue them onto the previous number token.
    fn continue_number(&mut self) -> Result<(), MathError> {
        let mut digits = String::new();
        for _ in 0..3 {
            digits.push(self.chars[self.pos]);
            self.pos += 1;
        }
        if let Some(Tok::Num(text)) = self.out.last_mut() {
            if !text.contains('.') {
                text.push_str(&digits);
                return Ok(());
            }
        }
        self.push(Tok::Comma)?;
        self.push(Tok::Num(digits))
    }

    fn word(&mut self) -> Result<(), MathError> {
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        let word: String = self.chars[start..self.pos].iter().collect();
        if word.len() == 1 {
            return self.letter(&word);
        }
        if let Some(f) = func_named(&word) {
            return self.push(Tok::Func(f));
        }
        match word.as_str() {
            "pi" => return self.push(Tok::Const(Const::Pi)),
            "inf" | "infty" | "infinity" => return self.push(Tok::Const(Const::Infinity)),
            _ => {}
        }
        // `AZYUK2A`: a digit glued to a word is part of a name, not a number (`cm2` is a unit).
        if matches!(self.peek(), Some('0'..='9')) && !is_unit_word(&word) {
            return Err(MathError::Syntax(format!("digits inside the word `{word}`")));
        }
        // `ext{13}`: letters glued to a group are a product in math mode, not a word.
        let glued_to_group = self.peek() == Some('{') && !is_unit_word(&word);
        if glued_to_group || (word.len() == 2 && !is_unit_word(&word) && !matches!(word.as_str(), "or" | "and" | "is"))
        {
            // `xy` in math mode is a product of two variables.
            for c in word.chars() {
                self.letter(&c.to_string())?;
            }
            return Ok(());
        }
        self.push(Tok::Word(word))
    }

    /// A one-letter variable (with its subscript, if any), or `e` / `i`.
    fn letter(&mut self, name: &str) -> Result<(), MathError> {
        if self.peek() == Some('_') {
            self.pos += 1;
            self.skip_spaces();
            let sub = match self.peek() {
                Some('{') => self.raw_group()?,
                Some(c) => {
                    self.pos += 1;
                    c.to_string()
                }
                None => String::new(),
            };
            let sub: String = sub.chars().filter(|c| !c.is_whitespace()).collect();
            return self.push(Tok::Var(format!("{name}_{sub}")));
        }
        match name {
            "e" => self.push(Tok::Const(Const::E)),
            "i" => self.push(Tok::Const(Const::I)),
            _ => self.push(Tok::Var(name.to_string())),
        }
    }

    fn command(&mut self) -> Result<(), MathError> {
        self.pos += 1; // the backslash
        let Some(mut c) = self.peek() else { return Ok(()) };
        if c == '\\' && self.doubled_commands && self.peek_at(1).is_some_and(|n| n.is_ascii_alphabetic()) {
            self.pos += 1;
            c = self.chars[self.pos];
        }
        // A backslash before any space (a tab, a form feed) is TeX's control space.
        if c.is_whitespace() {
            self.pos += 1;
            return Ok(());
        }
        if !c.is_ascii_alphabetic() {
            self.pos += 1;
            return match c {
                '{' => self.push(Tok::SetOpen),
                '}' => self.push(Tok::SetClose),
                '\\' => self.push(Tok::RowSep),
                '%' | '$' | '!' | ',' | ';' | ':' | ' ' | '>' | '#' | '&' => Ok(()),
                '(' | ')' | '[' | ']' => Ok(()),
                '|' => self.push(Tok::Pipe),
                other => Err(MathError::Syntax(format!("unknown command `\\{other}`"))),
            };
        }
        let start = self.pos;
        while matches!(self.peek(), Some(c) if c.is_ascii_alphabetic()) {
            self.pos += 1;
        }
        let name: String = self.chars[start..self.pos].iter().collect();
        if let Some(f) = func_named(&name) {
            return self.push(Tok::Func(f));
        }
        if GREEK.contains(&name.as_str()) {
            return self.letter(&name);
        }
        match name.as_str() {
            "pi" | "varpi" => self.push(Tok::Const(Const::Pi)),
            "infty" | "infin" => self.push(Tok::Const(Const::Infinity)),
            "emptyset" | "varnothing" => self.push(Tok::Const(Const::EmptySet)),
            "cdot" | "times" | "ast" => self.push(Tok::Times),
            "div" | "over" => self.push(Tok::Divide),
            "pm" | "mp" => self.push(Tok::PlusMinus),
            "cup" => self.push(Tok::Cup),
            "le" | "leq" | "leqslant" => self.push(Tok::Rel(Rel::Le)),
            "ge" | "geq" | "geqslant" => self.push(Tok::Rel(Rel::Ge)),
            "lt" => self.push(Tok::Rel(Rel::Lt)),
            "gt" => self.push(Tok::Rel(Rel::Gt)),
            "ne" | "neq" => self.push(Tok::Rel(Rel::Ne)),
            "approx" => self.approx(),
            "equiv" | "in" | "coloneqq" => self.push(Tok::Rel(Rel::Eq)),
            "lbrace" => self.push(Tok::SetOpen),
            "rbrace" => self.push(Tok::SetClose),
            "vert" | "lvert" | "rvert" | "mid" => self.push(Tok::Pipe),
            "langle" => self.push(Tok::Open('(')),
            "rangle" => self.push(Tok::Close(')')),
            "lbrack" => self.push(Tok::Open('[')),
            "rbrack" => self.push(Tok::Close(']')),
            "left" | "right" | "bigl" | "bigr" | "Bigl" | "Bigr" | "big" | "Big" | "bigg" | "Bigg" => {
                self.skip_spaces();
                if self.peek() == Some('.') {
                    self.pos += 1;
                }
                Ok(())
            }
            "displaystyle" | "textstyle" | "quad" | "qquad" | "mathrm" | "mathbf" | "mathit" | "boldsymbol" | "bm"
            | "mathnormal" | "operatorname" | "limits" | "nolimits" | "hspace" | "phantom" | "dots" | "ldots"
            | "cdots" | "therefore" | "boxed" | "fbox" => {
                if matches!(name.as_str(), "hspace" | "phantom") && self.peek() == Some('{') {
                    self.raw_group()?;
                }
                Ok(())
            }
            "circ" | "degree" => Ok(()),
            "text" | "textbf" | "textit" | "textrm" | "mbox" | "textnormal" | "texttt" => self.text(),
            "begin" | "end" => {
                self.skip_spaces();
                let env = if self.peek() == Some('{') { self.raw_group()? } else { String::new() };
                if !env.trim_end_matches('*').ends_with("matrix") && env != "array" {
                    return Err(MathError::Syntax(format!("unsupported environment `{env}`")));
                }
                if env == "array" && name == "begin" && self.peek() == Some('{') {
                    self.raw_group()?; // column spec
                }
                self.push(if name == "begin" { Tok::BeginMatrix } else { Tok::EndMatrix })
            }
            "cap" | "setminus" | "sum" | "prod" | "int" | "lim" | "to" | "rightarrow" | "implies" => {
                Err(MathError::Syntax(format!("unsupported command `\\{name}`")))
            }
            other => {
                // `\quadx`: a spacing command glued to the letters after it.
                if let Some(rest) = other.strip_prefix("qquad").or_else(|| other.strip_prefix("quad")) {
                    self.pos -= rest.chars().count();
                    return Ok(());
                }
                Err(MathError::Syntax(format!("unknown command `\\{other}`")))
            }
        }
    }

    /// `\text{...}`: its words become [`Tok::Word`]s; numbers and symbols inside are tokenized.
    fn text(&mut self) -> Result<(), MathError> {
        self.skip_spaces();
        if self.peek() != Some('{') {
            return Ok(());
        }
        let content = self.raw_group()?;
        let inner = tokenize(&content)?;
        for tok in inner {
            // Inside \text, a short letter run is a word, not a product of variables.
            match tok {
                Tok::Var(v) if v.len() == 1 => self.push(Tok::Word(v))?,
                other => self.push(other)?,
            }
        }
        Ok(())
    }
}
