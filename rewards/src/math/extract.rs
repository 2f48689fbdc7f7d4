//! Finding the answer in a completion (or in a gold answer that is a worked solution). The
//! sources, in their default order (Math-Verify's priorities): the last `<answer>…</answer>`, the
//! last `\boxed{}` / `\fbox{}` (brace-matched; boxes joined by "and" or commas are one list), the
//! text after the last "answer is" / "answer:", then whichever ends last of the last LaTeX math
//! (`$…$`, `$$…$$`, `\(…\)`, `\[…\]`, a bare `\frac{a}{b}`) and the last whole plain number or
//! arithmetic expression. Every search is linear in the completion's length.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::lex::is_unit_word;

/// Where an answer may come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The content of the last `<answer>…</answer>` (a `\boxed{}` inside it wins).
    AnswerTag,
    /// The last `\boxed{…}` or `\fbox{…}`.
    Boxed,
    /// The text after the last "answer is" / "answer:" up to the end of its sentence or line.
    FinalAnswer,
    /// The content of the last `$…$`, `$$…$$`, `\(…\)` or `\[…\]` (inline ones on one line).
    LatexMath,
    /// The last whole number (`-17`, `.4`, `1,234.5`, `1e3`) or plain arithmetic expression
    /// (`3/4`, `3 + 4`, `2^10`) standing on its own, outside LaTeX math: never digits inside a
    /// word (`AZYUK2A`) nor a piece of a larger expression (the `2` of `\frac{1+\sqrt5}{2}`).
    LastNumber,
}

impl Source {
    /// Whether the writer marked this answer as the answer (a tag or a box): then it is judged
    /// even when it does not parse. An answer found in prose only counts when it parses, and the
    /// next candidate is tried otherwise.
    pub fn is_marked(self) -> bool {
        matches!(self, Source::AnswerTag | Source::Boxed)
    }
}

/// What was extracted and from where.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Extracted {
    pub source: Source,
    pub text: String,
}

/// Candidates longer than this are cut (they cannot parse anyway; see the lexer's bound).
const MAX_CANDIDATE: usize = 4096;
/// Math environments offered per completion, the last first: enough to step over a `$` that was
/// a currency sign, few enough that a page of `$x$` costs nothing.
const MAX_MATH_SPANS: usize = 4;

fn clip(s: &str) -> String {
    if s.len() <= MAX_CANDIDATE {
        return s.trim().to_string();
    }
    let mut end = MAX_CANDIDATE;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].trim().to_string()
}

/// The candidates of each source in `sources` order (a source may offer several, best first).
///
/// LaTeX math and plain numbers are one priority, as in Math-Verify: when both sources are
/// asked for, next to each other, their candidates are tried from the one that ends last (`Let
/// $x$ be … so 42 apples remain` answers 42).
pub fn candidates(completion: &str, sources: &[Source]) -> Vec<Extracted> {
    let mut out = Vec::new();
    let mut k = 0;
    while k < sources.len() {
        let source = sources[k];
        if let Some(marked) = find_marked(completion, source) {
            // "The final answer is 10,455. I hope it is correct." after the last box: the
            // writer's last word (Math-Verify ranks the two alike, the later winning).
            if source == Source::Boxed && sources.contains(&Source::FinalAnswer) {
                if let Some(after) = final_answer_after_last_box(completion) {
                    out.push(Extracted { source: Source::FinalAnswer, text: clip(after) });
                }
            }
            let text = clip(&marked);
            if !text.is_empty() {
                out.push(Extracted { source, text });
            }
            k += 1;
            continue;
        }
        let mut found: Vec<(Source, &str)> = find(completion, source).into_iter().map(|t| (source, t)).collect();
        let prose_math = [Source::LatexMath, Source::LastNumber];
        if let Some(&next) = sources.get(k + 1) {
            if prose_math.contains(&source) && prose_math.contains(&next) && source != next {
                found.extend(find(completion, next).into_iter().map(|t| (next, t)));
                // By end position, the last first (numbers inside a span are not offered).
                found.sort_by_key(|(_, t)| std::cmp::Reverse(offset_in(completion, t) + t.len()));
                k += 1;
            }
        }
        for (source, text) in found {
            let text = clip(text);
            if !text.is_empty() {
                out.push(Extracted { source, text });
            }
        }
        k += 1;
    }
    out
}

/// What a tag or a box holds (`None` for the prose sources, and when there is none).
fn find_marked(completion: &str, source: Source) -> Option<Cow<'_, str>> {
    match source {
        Source::AnswerTag => answer_tag(completion).map(|inner| last_boxes(inner).unwrap_or(Cow::Borrowed(inner))),
        Source::Boxed => last_boxes(completion),
        _ => None,
    }
}

/// What one prose source finds in `completion`, best first.
fn find(completion: &str, source: Source) -> Vec<&str> {
    match source {
        Source::AnswerTag | Source::Boxed => Vec::new(),
        Source::FinalAnswer => final_answer(completion).into_iter().collect(),
        Source::LatexMath => {
            let mut found = last_math_spans(completion, MAX_MATH_SPANS);
            if let Some(fraction) = last_bare_fraction(completion) {
                let end = |t: &str| offset_in(completion, t) + t.len();
                let inside_a_span = found
                    .iter()
                    .any(|t| offset_in(completion, t) <= offset_in(completion, fraction) && end(fraction) <= end(t));
                if !inside_a_span {
                    found.push(fraction);
                    found.sort_by_key(|t| std::cmp::Reverse(end(t)));
                }
            }
            found
        }
        Source::LastNumber => last_number(completion).into_iter().collect(),
    }
}

/// Where `part`, a slice of `text`, starts in it.
fn offset_in(text: &str, part: &str) -> usize {
    part.as_ptr() as usize - text.as_ptr() as usize
}

/// The content of the last `<answer>` … `</answer>` (to the end if unclosed).
pub fn answer_tag(text: &str) -> Option<&str> {
    let start = text.rfind("<answer>")? + "<answer>".len();
    let rest = &text[start..];
    Some(match rest.find("</answer>") {
        Some(end) => &rest[..end],
        None => rest,
    })
}

/// The content of the last `\boxed{…}` / `\fbox{…}` (nested braces matched, escaped `\{`/`\}`
/// skipped, spaces before the brace allowed: `\boxed {5}`), or of `\boxed 5` (up to the next
/// space or `$`). `None` when the last box is unclosed or empty.
///
/// This is the one reading of a box: the gold answers of MATH-style datasets (aha-datasets'
/// `Boxed` format) and the completions are read by it alike.
pub fn last_boxed(text: &str) -> Option<&str> {
    last_box(text).map(|(_, content)| content)
}

/// Where the last box's command starts, and its content (see [`last_boxed`]).
fn last_box(text: &str) -> Option<(usize, &str)> {
    let boxed = text.rfind("\\boxed").map(|at| (at, at + "\\boxed".len()));
    let fbox = text.rfind("\\fbox").map(|at| (at, at + "\\fbox".len()));
    let (start, after) = boxed.max(fbox)?;
    let rest = &text[after..];
    let trimmed = rest.trim_start();
    if let Some(inner) = trimmed.strip_prefix('{') {
        let mut depth = 1usize;
        let mut chars = inner.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some((start, &inner[..i]));
                    }
                }
                _ => {}
            }
        }
        return None; // unbalanced: no answer
    }
    if rest.len() == trimmed.len() {
        return None; // `\boxedfoo`
    }
    let end = trimmed.find(|c: char| c.is_whitespace() || c == '$').unwrap_or(trimmed.len());
    (end > 0).then(|| (start, &trimmed[..end]))
}

/// Most boxes read as one answer.
const MAX_JOINED_BOXES: usize = 16;

/// The last box, together with the boxes before it that only a comma, "and", "or" or spacing
/// separates from it (`\boxed{1}, \boxed{2} \text{ and } \boxed{3}` is the list `1, 2, 3`, as
/// Math-Verify reads it; `\boxed{3} then corrected: \boxed{4}` is 4).
pub fn last_boxes(text: &str) -> Option<Cow<'_, str>> {
    let (mut start, last) = last_box(text)?;
    let mut items = vec![last];
    while items.len() < MAX_JOINED_BOXES {
        let Some((previous_start, previous)) = last_box(&text[..start]) else { break };
        let previous_end = offset_in(text, previous) + previous.len();
        let gap = text[previous_end..start].strip_prefix('}').unwrap_or(&text[previous_end..start]);
        if !only_joins(gap) && !separates_answers(gap, previous, items[items.len() - 1]) {
            break;
        }
        items.push(previous);
        start = previous_start;
    }
    if items.len() == 1 {
        return Some(Cow::Borrowed(last));
    }
    items.reverse();
    Some(Cow::Owned(items.iter().map(|item| item.trim()).collect::<Vec<_>>().join(", ")))
}

/// Math-Verify's rule for boxes that are one answer, without its words or commas: under 10
/// characters apart with no letter between them, or under 70 with "and" or "or" between them and
/// different contents (`\boxed{1} papers and \boxed{2} bins`, `\boxed{(3, 3)} \text{ for part
/// (a) and } \boxed{(1, 1)}`). Other words do not join (`\boxed{1} so \boxed{2}` is 2;
/// `\boxed{3}, then corrected: \boxed{4}` is 4; Math-Verify reads both as lists).
fn separates_answers(gap: &str, previous: &str, next: &str) -> bool {
    let n = gap.chars().count();
    if n < 10 && !gap.chars().any(char::is_alphabetic) {
        return true;
    }
    let separator = gap.split(|c: char| !c.is_ascii_alphanumeric()).any(|word| word == "and" || word == "or");
    n < 70 && separator && previous.trim() != next.trim()
}

/// Whether the text between two boxes only joins them: punctuation, math delimiters, spacing
/// commands and the words "and" / "or".
fn only_joins(gap: &str) -> bool {
    gap.len() <= 40
        && gap
            .split(|c: char| !c.is_ascii_alphabetic())
            .all(|word| matches!(word, "" | "and" | "or" | "quad" | "qquad" | "text" | "textrm" | "mathrm" | "mbox"))
        && gap.chars().all(|c| c.is_ascii_alphabetic() || c.is_whitespace() || ",;$\\(){}[]&~".contains(c))
}

fn final_answer_is_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)final answer is").unwrap())
}

/// The answer of a "final answer is …" phrase written after the last box, if there is one.
fn final_answer_after_last_box(text: &str) -> Option<&str> {
    let (_, content) = last_box(text)?;
    let after = &text[offset_in(text, content) + content.len()..];
    let answer = final_answer_is_regex().is_match(after).then(|| final_answer(after)).flatten()?;
    // Words alone ("the final answer is as boxed above") leave the box the answer.
    answer.contains(|c: char| c.is_ascii_digit() || c == '\\').then_some(answer)
}

fn final_answer_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"(?i)answer\s*(?:\*\*)?\s*(?:is|:)\s*:?\s*(?:\*\*)?").unwrap())
}

/// The text after the last "answer is" / "answer:", to the end of its sentence or line, `$…$`
/// unwrapped and a final period dropped.
pub fn final_answer(text: &str) -> Option<&str> {
    let m = final_answer_regex().find_iter(text).last()?;
    let rest = &text[m.end()..];
    let line = rest.trim_start().lines().next().unwrap_or("").trim();
    // The sentence ends at a period and a space (`4. Check: …`; `3.5` has no space).
    let line = line.split_once(". ").map_or(line, |(sentence, _)| sentence);
    let line = line.strip_suffix('.').unwrap_or(line).trim();
    let line = line.strip_suffix("**").unwrap_or(line).trim();
    // `$\frac12$` or `\( … \)`
    let unwrapped = if let Some(inner) = line.strip_prefix("$$").and_then(|l| l.find("$$").map(|e| &l[..e])) {
        inner
    } else if let Some(inner) = line.strip_prefix('$').and_then(|l| l.find('$').map(|e| &l[..e])) {
        inner
    } else if let Some(inner) = line.strip_prefix("\\(").and_then(|l| l.find("\\)").map(|e| &l[..e])) {
        inner
    } else if let Some(inner) = line.strip_prefix("\\[").and_then(|l| l.find("\\]").map(|e| &l[..e])) {
        inner
    } else {
        line
    };
    let unwrapped = unwrapped.trim();
    (!unwrapped.is_empty()).then_some(unwrapped)
}

/// The contents of the last `max` math environments, the last first. `$…$` and `\(…\)` end on
/// their line; `$$…$$` and `\[…\]` may span lines; `\$` is a dollar sign, and so is a `$`
/// right after a digit. One pass: an opener with no closer after it means no later opener of
/// that kind closes either.
pub fn last_math_spans(text: &str, max: usize) -> Vec<&str> {
    let mut spans: VecDeque<&str> = VecDeque::with_capacity(max + 1);
    for_each_math_span(text, |start, end| {
        spans.push_back(&text[start..end]);
        if spans.len() > max {
            spans.pop_front();
        }
    });
    spans.into_iter().rev().collect()
}

/// Calls `found(start, end)` with the byte range of each math environment's content, in order.
fn for_each_math_span(text: &str, mut found: impl FnMut(usize, usize)) {
    let bytes = text.as_bytes();
    // An empty span (`$$$$`) holds no answer.
    let mut keep = |span: &str| {
        let start = offset_in(text, span);
        if !span.trim().is_empty() {
            found(start, start + span.len());
        }
    };
    // Past these positions an opener of that kind has no closer (its line, or the text, ran out).
    let (mut dead_paren, mut dead_bracket, mut dead_display) = (0, 0, 0);
    let line_end = |from: usize| text[from..].find('\n').map_or(text.len(), |n| from + n);
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'\\', Some(b'(')) if i >= dead_paren => {
                let (body, end) = (i + 2, line_end(i + 2));
                match find_pair(&bytes[body..end], *b"\\)") {
                    Some(len) => {
                        keep(&text[body..body + len]);
                        i = body + len + 2;
                    }
                    None => {
                        dead_paren = end;
                        i = body;
                    }
                }
            }
            (b'\\', Some(b'[')) if i >= dead_bracket => {
                let body = i + 2;
                match find_pair(&bytes[body..], *b"\\]") {
                    Some(len) => {
                        keep(&text[body..body + len]);
                        i = body + len + 2;
                    }
                    None => {
                        dead_bracket = text.len();
                        i = body;
                    }
                }
            }
            // An escaped character (`\$`, `\\`) or a command.
            (b'\\', _) => i += 2,
            (b'$', Some(b'$')) if i >= dead_display => {
                let body = i + 2;
                match find_pair(&bytes[body..], *b"$$") {
                    Some(len) => {
                        keep(&text[body..body + len]);
                        i = body + len + 2;
                    }
                    None => {
                        dead_display = text.len();
                        i = body;
                    }
                }
            }
            (b'$', Some(b'$')) => i += 2,
            // `5$`: a currency sign after the amount.
            (b'$', _) if i > 0 && bytes[i - 1].is_ascii_digit() => i += 1,
            (b'$', _) => {
                let body = i + 1;
                let mut from = body;
                let mut closed = None;
                while let Some(n) = text[from..].find(['$', '\n']) {
                    let at = from + n;
                    if bytes[at] == b'\n' {
                        break;
                    }
                    if bytes[at - 1] == b'\\' {
                        from = at + 1; // `\$` inside
                        continue;
                    }
                    closed = Some(at);
                    break;
                }
                match closed {
                    // `$5 for apples and $10`: two dollar signs around prose are no math.
                    Some(at) if is_prose(&text[body..at]) => i = at,
                    Some(at) => {
                        keep(&text[body..at]);
                        i = at + 1;
                    }
                    None => i = body,
                }
            }
            _ => i += 1,
        }
    }
}

fn bare_fraction_regex() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"-?\\[dt]?frac\{-?\d+(?:\.\d+)?\}\{-?\d+(?:\.\d+)?\}").unwrap())
}

/// The last `\frac{a}{b}` of plain numbers written outside any math environment (Math-Verify
/// reads these too), unless it is part of something larger (`\sqrt{\frac{1}{2}}`, `\frac{1}{2}^3`).
fn last_bare_fraction(text: &str) -> Option<&str> {
    let m = bare_fraction_regex().find_iter(text).last()?;
    let before = text[..m.start()].chars().next_back();
    let after = text[m.end()..].chars().next();
    let glued_before = before.is_some_and(|c| c.is_alphanumeric() || matches!(c, '{' | '^' | '_' | '\\'));
    let glued_after = after.is_some_and(|c| c.is_alphanumeric() || matches!(c, '}' | '^' | '_' | '{'));
    (!glued_before && !glued_after).then_some(m.as_str())
}

/// Whether a `$…$` span (or a candidate found in prose) holds words rather than math: two or more words of three letters or
/// more outside commands and `\text{}`-like groups.
pub(crate) fn is_prose(span: &str) -> bool {
    let bytes = span.as_bytes();
    let (mut words, mut i) = (0, 0);
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'\\') && bytes.get(i + 2).is_some_and(u8::is_ascii_alphabetic) {
                i += 1; // `\\frac`: a command escaped twice
                continue;
            }
            let name_len = bytes[i + 1..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
            let name = &span[i + 1..i + 1 + name_len];
            i += 1 + name_len.max(1);
            let takes_words = matches!(
                name,
                "text" | "textbf" | "textit" | "textrm" | "mbox" | "mathrm" | "operatorname" | "begin" | "end"
            );
            if takes_words && bytes.get(i) == Some(&b'{') {
                i += span[i..].find('}').map_or(span.len() - i, |n| n + 1);
            }
            continue;
        }
        let len = bytes[i..].iter().take_while(|b| b.is_ascii_alphabetic()).count();
        if len >= 3 {
            words += 1;
        }
        i += len.max(1);
    }
    words >= 2
}

/// Where the two-byte `pair` first occurs in `hay`. A plain scan: `str::find` prepares a
/// searcher on every call, which a text of a million `$$` would pay a million times.
fn find_pair(hay: &[u8], pair: [u8; 2]) -> Option<usize> {
    hay.windows(2).position(|w| w == pair)
}

/// Characters a plain expression is made of (`,` only as a thousands separator, `e` only as a
/// decimal exponent: both checked where they occur).
fn in_plain_expression(c: char) -> bool {
    c.is_ascii_digit() || matches!(c, '.' | '+' | '-' | '−' | '*' | '×' | '/' | '÷' | '^' | '(' | ')' | ' ')
}

/// What may stand right before a plain answer: nothing, a space, `=`, `:`, a currency sign, a
/// quote or an opening bracket.
fn opens_plain_answer(c: Option<char>) -> bool {
    match c {
        None => true,
        Some(c) => c.is_whitespace() || matches!(c, '=' | ':' | '$' | '€' | '£' | '¥' | '"' | '\'' | '[' | '~' | '≈'),
    }
}

/// The last whole plain number or arithmetic expression (see [`Source::LastNumber`]).
pub fn last_number(text: &str) -> Option<&str> {
    // Numbers inside LaTeX math are pieces of it (a matrix entry), not plain answers. The spans are
    // found when the first number is.
    let mut spans: Option<Vec<(usize, usize)>> = None;
    let mut in_math = |at: usize| {
        let spans = spans.get_or_insert_with(|| {
            let mut all = Vec::new();
            for_each_math_span(text, |start, end| all.push((start, end)));
            all
        });
        let k = spans.partition_point(|&(start, _)| start <= at);
        k > 0 && at < spans[k - 1].1
    };
    let mut best = None;
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if !in_plain_expression(c) {
            chars.next();
            continue;
        }
        // One run of expression characters; `,` and `e` join it only inside a number.
        let mut end = start;
        let mut prev = None;
        while let Some(&(at, c)) = chars.peek() {
            let joins = in_plain_expression(c)
                || (c == ','
                    && prev.is_some_and(|p: char| p.is_ascii_digit())
                    && (thousands_group_at(text, at + 1) || is_decimal_comma(text.as_bytes(), at)))
                || (matches!(c, 'e' | 'E')
                    && prev.is_some_and(|p: char| p.is_ascii_digit())
                    && exponent_at(text, at + 1));
            if !joins {
                break;
            }
            end = at + c.len_utf8();
            prev = Some(c);
            chars.next();
        }
        if let Some(found) = whole_expression(text, start, end) {
            if !in_math(offset_in(text, found)) {
                best = Some(found);
            }
        }
        if end == start {
            chars.next();
        }
    }
    best
}

/// Whether the comma at `at` is a decimal comma of a plain number, as Math-Verify reads plain
/// text: digits on both sides, the number has no other separator, and it cannot be thousands
/// (`1,22`, `1000,99`, `0,111`, `2,74`; not `1,234`, `12,345,678` or `1,2,3`).
fn is_decimal_comma(bytes: &[u8], at: usize) -> bool {
    if bytes.get(at) != Some(&b',') {
        return false;
    }
    let whole = bytes[..at].iter().rev().take_while(|b| b.is_ascii_digit()).count();
    let fraction = bytes[at + 1..].iter().take_while(|b| b.is_ascii_digit()).count();
    if whole == 0 || fraction == 0 {
        return false;
    }
    let before = at - whole;
    let separator = |b: Option<&u8>| matches!(b, Some(b',' | b'.'));
    let digit = |b: Option<&u8>| b.is_some_and(u8::is_ascii_digit);
    // Another separator with a digit beyond it belongs to the same number: not a plain decimal.
    if before > 0 && separator(bytes.get(before - 1)) && before >= 2 && digit(bytes.get(before - 2)) {
        return false;
    }
    let after = at + 1 + fraction;
    if separator(bytes.get(after)) && digit(bytes.get(after + 1)) {
        return false;
    }
    let thousands = whole <= 3 && bytes[before] != b'0' && fraction == 3;
    !thousands
}

/// A plain number standing alone whose comma is a decimal comma (`1,22`, see
/// [`is_decimal_comma`]) with a decimal point instead: how a whole answer written in plain text,
/// a tag's content or the last number of prose is read. `None` for anything else.
pub(crate) fn plain_decimal_comma(text: &str) -> Option<String> {
    let trimmed = text.trim();
    let digits = trimmed.strip_prefix(['-', '+']).unwrap_or(trimmed);
    let (whole, fraction) = digits.split_once(',')?;
    let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(all_digits(whole) && all_digits(fraction)) {
        return None;
    }
    let comma = trimmed.len() - fraction.len() - 1;
    if !is_decimal_comma(trimmed.as_bytes(), comma) {
        return None;
    }
    Some(format!("{}.{}", &trimmed[..comma], &trimmed[comma + 1..]))
}

/// Plain text (no LaTeX command, no math environment) with its decimal commas (see
/// [`is_decimal_comma`]) made points: how a tag's plain content is read. `None` when there is
/// nothing to change.
pub(crate) fn plain_text_decimal_commas(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    if text.contains('\\') || !last_math_spans(text, 1).is_empty() {
        return None;
    }
    let commas: Vec<usize> = (0..bytes.len()).filter(|&i| is_decimal_comma(bytes, i)).collect();
    if commas.is_empty() {
        return None;
    }
    let mut out = text.to_string();
    for at in commas {
        out.replace_range(at..at + 1, ".");
    }
    Some(out)
}

/// `ddd` then no digit: a thousands group after a comma.
fn thousands_group_at(text: &str, at: usize) -> bool {
    let rest = text.as_bytes().get(at..).unwrap_or(&[]);
    rest.len() >= 3 && rest[..3].iter().all(u8::is_ascii_digit) && !rest.get(3).is_some_and(u8::is_ascii_digit)
}

/// `3`, `-7`, `+12` then no letter: a decimal exponent after `e`.
fn exponent_at(text: &str, at: usize) -> bool {
    let rest = text.as_bytes().get(at..).unwrap_or(&[]);
    let sign = usize::from(matches!(rest.first(), Some(b'+' | b'-')));
    let digits = rest[sign.min(rest.len())..].iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && !rest.get(sign + digits).is_some_and(u8::is_ascii_alphabetic)
}

/// The answer in the run `text[start..end]`, if it is one whole expression: trimmed of spaces,
/// sentence punctuation and `**` bold; only its last piece when it holds two operands side by
/// side (`step 2 3` -> `3`); nothing when it is glued to a word or to LaTeX on either side, or
/// starts or ends with an operator that belongs to something outside it.
fn whole_expression(text: &str, start: usize, end: usize) -> Option<&str> {
    let run = &text[start..end];
    if !run.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut lead = run.len() - run.trim_start().len();
    let mut trail = run.len() - run.trim_end().len();
    // Bold: `**42**`
    if run[lead..].starts_with("**") && (lead > 0 || opens_plain_answer(text[..start].chars().next_back())) {
        lead += 2;
    }
    while lead + trail < run.len() {
        let body = &run[lead..run.len() - trail];
        if let Some(stripped) = body.strip_suffix("**") {
            trail += body.len() - stripped.len();
        } else if body.ends_with(['.', ' ']) {
            trail += 1;
        } else {
            break;
        }
    }
    if lead + trail >= run.len() {
        return None;
    }
    let (s, e) = (start + lead, end - trail);
    let mut body = &text[s..e];
    // An unmatched bracket at either end belongs to the sentence: `(so 5)`.
    let depth = body.chars().fold(0i64, |d, c| d + i64::from(c == '(') - i64::from(c == ')'));
    if depth < 0 && body.ends_with(')') {
        body = body[..body.len() - 1].trim_end();
    } else if depth > 0 && body.starts_with('(') {
        body = body[1..].trim_start();
    }
    let body = last_operand_group(body);
    if !body.chars().any(|c| c.is_ascii_digit()) {
        return None;
    }
    let body_start = offset_in(text, body);
    let body_end = body_start + body.len();
    // The left edge: a sign must be attached (`-17`, not the `- 3` of `x - 3`); other operators
    // continue something before.
    let mut chars = body.chars();
    match chars.next()? {
        '+' | '-' | '−' if !chars.next().is_some_and(|c| c.is_ascii_digit() || c == '.' || c == '(') => return None,
        '*' | '×' | '/' | '÷' | '^' | ')' => return None,
        _ => {}
    }
    // Whatever the run trimmed off its front (a space, `**`, `(`) separates the answer from what
    // is before; otherwise the character before the run must.
    if body_start == start && !opens_plain_answer(text[..start].chars().next_back()) {
        return None;
    }
    if body.ends_with(['+', '-', '−', '*', '×', '/', '÷', '^', '(']) {
        return None;
    }
    // The right edge: a unit may follow (`5cm`), a word or LaTeX may not (`2A`, `2^{`, `2}`).
    let after = &text[body_end..];
    match after.chars().next() {
        Some(c) if c.is_alphabetic() => {
            let word: String = after.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            if !is_unit_word(&word) {
                return None;
            }
        }
        Some('{' | '}' | '\\' | '_') => return None,
        _ => {}
    }
    Some(body)
}

/// `2 3` holds two operands side by side: a list written with spaces, or numbers from different
/// sentences. Only the last group counts; `1 000` (thousands) stays whole.
fn last_operand_group(body: &str) -> &str {
    let mut group_start = 0;
    let mut previous: Option<&str> = None;
    let mut offset = 0;
    let thousands = is_space_thousands(body);
    for piece in body.split(' ') {
        if !piece.is_empty() {
            if let Some(prev) = previous {
                let operand_end = prev.ends_with(|c: char| c.is_ascii_digit() || c == '.' || c == ')');
                let operand_start = piece.starts_with(|c: char| c.is_ascii_digit() || c == '.' || c == '(');
                if operand_end && operand_start && !thousands {
                    group_start = offset;
                }
            }
            previous = Some(piece);
        }
        offset += piece.len() + 1;
    }
    &body[group_start..]
}

/// `1 000 000` or `12 345.5`: digits in groups of three after a first group of one to three.
fn is_space_thousands(body: &str) -> bool {
    let mut groups = body.split(' ');
    let first = groups.next().unwrap_or("");
    let rest: Vec<&str> = groups.collect();
    if rest.is_empty() || !(1..=3).contains(&first.len()) || !first.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    rest.iter().enumerate().all(|(k, g)| {
        let digits = if k + 1 == rest.len() { g.split_once('.').map_or(*g, |(d, _)| d) } else { g };
        digits.len() == 3 && digits.bytes().all(|b| b.is_ascii_digit())
    })
}
