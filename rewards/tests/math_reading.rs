//! The `math` checker reading answers the way models write them (issue 20): where the answer is
//! found, in which order, what is never an answer, and numbers compared neither too loosely nor
//! too strictly.

use aha_rewards::math::{candidates, last_boxed, last_boxes, last_math_spans, last_number, MathChecker, Source};
use aha_rewards::Score;

/// `Some(true)`: reward 1; `Some(false)`: reward 0; `None`: skip.
fn outcome(completion: &str, gold: &str) -> Option<bool> {
    match MathChecker::default().verdict(completion, gold).score {
        Score::Reward { reward } => Some(reward == 1.0),
        Score::Skip { .. } => None,
    }
}

fn check_all(cases: &[(&str, &str, bool)]) {
    let checker = MathChecker::default();
    let failures: Vec<String> = cases
        .iter()
        .filter(|(completion, gold, expected)| outcome(completion, gold) != Some(*expected))
        .map(|(completion, gold, expected)| {
            format!("{completion:?} gold {gold:?}: expected {expected}, {}", checker.verdict(completion, gold).detail)
        })
        .collect();
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

/// A reward that pays for the last digit of a wrong expression teaches a policy to end wrong
/// expressions with the right digit.
#[test]
fn false_positives_score_zero() {
    check_all(&[
        // digits inside words are no number
        ("AZYUK2A", "2", false),
        ("<answer>AZYUK2A</answer>", "2", false),
        ("\\boxed{AZYUK2}", "2", false),
        ("The code is X2", "2", false),
        // never a fragment of a larger expression
        ("$\\frac{1+\\sqrt{5}}{2}$", "2", false),
        ("so x = \\frac{1+\\sqrt{5}}{2}", "2", false),
        ("\\(\\frac{1+\\sqrt{5}}{2}\\)", "2", false),
        ("we get x - 3", "3", false),
        ("we get 2x", "2", false),
        ("it is 2^{10}", "10", false),
        ("so it is 3 + 4", "4", false),
        // small is not zero
        ("\\boxed{e^{-1000}}", "0", false),
        ("\\boxed{0.1^{100}}", "0", false),
        ("\\boxed{\\sin(\\sin(\\sin(x)))^{10^{9}}}", "0", false),
        ("$e^{-1000}$", "0", false),
        ("\\boxed{e^{-40}}", "0", false),
        ("\\boxed{10^{-20}}", "0", false),
        ("\\boxed{0.0000001}", "0", false),
        ("\\boxed{1e-7}", "0", false),
        ("\\boxed{2^{-2000}}", "0", false),
        ("\\boxed{0}", "10^{-20}", false),
        ("\\boxed{0}", "e^{-40}", false),
        // nor is huge infinite
        ("\\boxed{10^{10^{10}}}", "\\infty", false),
        ("\\boxed{e^{1000}}", "\\infty", false),
    ]);
}

#[test]
fn zero_up_to_rounding_is_zero() {
    check_all(&[
        ("\\boxed{\\sin(\\pi)}", "0", true),
        ("\\boxed{\\sin^2 x + \\cos^2 x - 1}", "0", true),
        ("\\boxed{x - x}", "0", true),
        ("\\boxed{\\ln 1}", "0", true),
        ("\\boxed{0.0}", "0", true),
        ("\\boxed{\\cos(\\pi/2)}", "0", true),
        ("\\boxed{\\tan(\\pi)}", "0", true),
    ]);
}

/// Relative where the gold is not zero: the same relative error counts the same at every scale.
#[test]
fn tolerance_is_relative() {
    check_all(&[
        ("\\boxed{0.333333}", "1/3", true),
        ("\\boxed{0.33333}", "1/3", false),
        ("\\boxed{0.0000012}", "0.0000011", false),
        ("\\boxed{0.00000110000001}", "0.0000011", true),
        ("\\boxed{123456700.1}", "123456700", true),
        ("\\boxed{123456800}", "123456700", false),
        ("\\boxed{1.0000001e-30}", "10^{-30}", true),
        ("\\boxed{1.1e-30}", "10^{-30}", false),
        ("\\boxed{3.1415926}", "\\pi", true),
        ("\\boxed{3.1416}", "\\pi", false),
    ]);
}

#[test]
fn scientific_notation_is_its_value() {
    check_all(&[
        ("1e3", "1000", true),
        ("2.5e3", "2500", true),
        ("\\boxed{2.5e3}", "2500", true),
        ("\\boxed{1E+3}", "1000", true),
        ("\\boxed{1e-3}", "0.001", true),
        ("\\boxed{6.02e23}", "6.02 \\times 10^{23}", true),
        ("The answer is 1e3.", "1000", true),
        ("1e3", "100", false),
        ("\\boxed{2e}", "2e", true),
        ("\\boxed{2e}", "2", false),
    ]);
}

#[test]
fn plain_numbers_are_read_whole() {
    check_all(&[
        (".4", "0.4", true),
        ("so it is .4", "0.4", true),
        ("-17", "-17", true),
        ("The result is -17.", "-17", true),
        ("The total is 1,234,567 apples", "1234567", true),
        ("the number is not 10 which is 1,000.99€", "1000.99", true),
        ("Hence the probability is 1/3.", "1/3", true),
        ("x = 3 + 4", "7", true),
        ("it costs $10", "10", true),
        ("He pays $5 for apples and $10 for pears", "10", true),
        ("**5**", "5", true),
        ("The length is 5cm.", "5", true),
        ("(so 5)", "5", true),
        ("We compute 3 + 4 = 7 and then 7 * 6 = 42", "42", true),
        ("page 2 3", "3", true),
        ("1 000", "1000", true),
    ]);
}

#[test]
fn latex_math_environments_are_answers() {
    check_all(&[
        ("$\\frac13 $", "1/3", true),
        ("So we get $\\frac{1}{3}$", "1/3", true),
        ("So we get $$\\frac{1}{3}$$", "1/3", true),
        ("So we get \\(\\frac{1}{3}\\)", "1/3", true),
        ("So we get \\[\\frac{1}{3}\\]", "1/3", true),
        ("So we get \\[\n\\frac{1}{3}\n\\]", "1/3", true),
        ("first $1$ then $2$", "2", true),
        ("first $1$ then $2$", "1", false),
        ("$x = 5$", "5", true),
        ("It costs \\$5 and we need $x = 7$", "7", true),
        // The last of a span and a plain number wins, as in Math-Verify.
        ("Let $x$ be the number of apples. So there are 42 apples.", "42", true),
        ("We found 3 cases, so $n = 4$", "4", true),
        // a bare \frac of plain numbers is LaTeX too, when it stands alone
        ("\\frac{10}{9}", "10/9", true),
        ("so it is -\\frac{10}{9}", "-10/9", true),
        ("so it is \\sqrt{\\frac{1}{2}}", "1/2", false),
        ("so it is \\frac{1}{2}^3", "1/2", false),
        // numbers inside LaTeX are pieces of it
        ("$\\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix} \\begin{pmatrix}1 & 0 \\\\ 0 & 1\\end{pmatrix}$", "0", false),
    ]);
}

/// Tags, then boxes, then "answer is", then the last of LaTeX math and plain numbers.
#[test]
fn extraction_order() {
    check_all(&[
        ("\\boxed{3} <answer>4</answer>", "4", true),
        ("<answer>4</answer> \\boxed{3}", "4", true),
        ("The answer is 5. $\\boxed{4}$", "4", true),
        ("\\boxed{4} The answer is 5.", "4", true),
        ("The answer is 4. Check: $2 + 2 = 4$, and $x = 9$.", "4", true),
        ("Let $x$ be the number. The answer is 42.", "42", true),
        ("The answer is **42**.", "42", true),
        // a box that does not parse is a wrong answer, not a reason to look elsewhere
        ("The answer is 4. \\boxed{4 +}", "4", false),
        // boxes joined only by commas, "and", "or" or spacing are one list
        ("\\boxed{1}, \\boxed{2} \\text{ and } \\boxed{3}", "\\{1,2,3\\}", true),
        ("$\\boxed{k = 45} \\quad \\text{and} \\quad \\boxed{n = 2}$", "k = 45, n = 2", true),
        ("\\boxed{1} and \\boxed{2}", "2", false),
        ("First \\boxed{3}, then corrected: \\boxed{4}", "4", true),
        ("\\boxed{1} no no no \\boxed{2}", "2", true),
        // a letter read from a sentence in the answer tag
        ("<answer>we check, so the answer is (A)</answer>", "(A)", true),
        ("<answer>we check, so the answer is (B)</answer>", "(A)", false),
        // a gold that is a worked solution is read like a completion
        ("\\boxed{1,2}", "\\boxed{1}\\boxed{2}", true),
        ("\\boxed{7}", "We add them up, so the total is $7$.", true),
        ("\\boxed{8}", "We add them up, so the total is $7$.", false),
        // prose that does not parse is: the next candidate is tried
        ("The answer is that we need more apples, 42 of them", "42", true),
    ]);
    let found = candidates(
        "<answer>1</answer> \\boxed{2} answer is 3. $4$ and 5",
        &[Source::AnswerTag, Source::Boxed, Source::FinalAnswer, Source::LatexMath, Source::LastNumber],
    );
    let found: Vec<(Source, &str)> = found.iter().map(|e| (e.source, e.text.as_str())).collect();
    assert_eq!(
        found,
        [
            (Source::AnswerTag, "1"),
            (Source::Boxed, "2"),
            (Source::FinalAnswer, "3"),
            (Source::LastNumber, "5"),
            (Source::LatexMath, "4"),
        ]
    );
}

#[test]
fn the_extractors_on_their_own() {
    assert_eq!(last_number("AZYUK2A"), None);
    assert_eq!(last_number("x = \\frac{1+\\sqrt{5}}{2}"), None);
    assert_eq!(last_number("a .4 b"), Some(".4"));
    assert_eq!(last_number("is -1,234.5."), Some("-1,234.5"));
    assert_eq!(last_number("in 1e3 steps"), Some("1e3"));
    assert_eq!(last_number("(3 + 4) * 2 = 14"), Some("14"));
    assert_eq!(last_number("(3 + 4) * 2"), Some("(3 + 4) * 2"));
    assert_eq!(last_number(""), None);
    assert_eq!(last_number("$1 & 0 \\\\ 0 & 1$"), None);
    assert_eq!(last_number("$x = 5$ and 6 more"), Some("6"));
    assert_eq!(last_math_spans("$a$ $$b$$ \\(c\\) \\[d\\]", 4), ["d", "c", "b", "a"]);
    assert_eq!(last_math_spans("$a$ $b$ $c$", 2), ["c", "b"]);
    assert_eq!(last_math_spans("costs 5$ and $x$", 4), ["x"]);
    assert_eq!(last_math_spans("\\$5 and \\$6", 4), Vec::<&str>::new());
    assert_eq!(last_math_spans("$a\nb$", 4), Vec::<&str>::new());
    assert_eq!(last_math_spans("$$a\nb$$", 4), ["a\nb"]);
    assert_eq!(last_math_spans("$x$ \\( unclosed", 4), ["x"]);
    // one reading of a box, for datasets' gold answers and for completions
    assert_eq!(last_boxed("\\boxed {5}"), Some("5"));
    assert_eq!(last_boxed("\\boxed 5$."), Some("5"));
    assert_eq!(last_boxed("\\boxed{}"), Some(""));
    assert_eq!(last_boxed("\\boxed "), None);
    assert_eq!(last_boxed("\\boxedfoo"), None);
    assert_eq!(last_boxes("\\boxed{1} or \\boxed{2}").as_deref(), Some("1, 2"));
    assert_eq!(last_boxes("\\boxed{1} so \\boxed{2}").as_deref(), Some("2"));
    assert_eq!(last_boxes("none"), None);
}

/// The equivalences the issue names, as Math-Verify 0.9.0 judges them.
#[test]
fn equivalences_of_relations_sets_text_and_matrices() {
    check_all(&[
        // inequalities, normalised by direction
        ("\\boxed{5 \\geq x}", "x \\leq 5", true),
        ("\\boxed{5 > x}", "x < 5", true),
        ("$5 \\geq x$", "x \\leq 5", true),
        ("\\boxed{-2x \\le -10}", "x \\geq 5", true),
        ("\\boxed{x \\geq 5}", "x \\leq 5", false),
        ("\\boxed{5 \\leq x}", "x \\leq 5", false),
        ("\\boxed{x < 5}", "x \\leq 5", false),
        // \pm against the set it stands for
        ("\\boxed{\\pm 1}", "\\{1,-1\\}", true),
        ("\\boxed{\\{1,-1\\}}", "\\pm 1", true),
        ("\\boxed{x = \\pm 1}", "x = 1, x = -1", true),
        ("\\boxed{1 \\pm \\sqrt{2}}", "\\{1+\\sqrt{2}, 1-\\sqrt{2}\\}", true),
        ("\\boxed{\\pm 1}", "\\{1, 2\\}", false),
        ("\\boxed{\\pm 1}", "1", false),
        // text answers in or out of \text{}
        ("\\boxed{\\text{odd}}", "odd", true),
        ("\\boxed{odd}", "\\text{odd}", true),
        ("\\boxed{\\text{ odd }}", "\\text{odd}", true),
        ("\\boxed{\\textbf{odd}}", "\\text{odd}", true),
        ("$\\text{odd}$", "odd", true),
        ("The answer is odd.", "\\text{odd}", true),
        ("\\boxed{\\text{even}}", "odd", false),
        ("\\boxed{\\text{no}}", "\\text{no}", true),
        ("$\\textbf{no}$", "\\text{no}", true),
        ("\\boxed{\\text{no}}", "\\text{yes}", false),
        // matrices in any bracket style
        ("\\boxed{\\begin{bmatrix}1&2\\\\3&4\\end{bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", true),
        (
            "\\boxed{\\left[\\begin{matrix}1&2\\\\3&4\\end{matrix}\\right]}",
            "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
            true,
        ),
        (
            "\\boxed{\\left(\\begin{array}{cc}1&2\\\\3&4\\end{array}\\right)}",
            "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
            true,
        ),
        ("\\boxed{\\begin{Bmatrix}1&2\\\\3&4\\end{Bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", true),
        ("\\boxed{\\begin{bmatrix}1&2\\\\3&5\\end{bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", false),
        ("\\boxed{\\begin{bmatrix}1&2&3&4\\end{bmatrix}}", "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}", false),
        // assignments: by variable against assignments, in the order written against a tuple;
        // `;` separates solutions when `,` separates values
        ("\\boxed{p=5,q=2}", "(5,2)", true),
        ("\\boxed{p=2,q=5}", "(5,2)", false),
        ("\\boxed{(1,2)}", "x = 1, y = 2", true),
        ("\\boxed{y = 2, x = 1}", "x = 1, y = 2", true),
        ("\\boxed{x = 2, y = 1}", "x = 1, y = 2", false),
        ("\\boxed{p=5,q=2;p=7,q=2}", "(5,2),(7,2)", true),
        ("\\boxed{p=7, q=2; p=5, q=2}", "\\{(5,2),(7,2)\\}", true),
        ("\\boxed{q=2,p=5;q=2,p=7}", "(5,2),(7,2)", false),
        ("\\boxed{p=5,q=2;p=7,q=3}", "(5,2),(7,2)", false),
        ("\\boxed{1;2;3}", "1,2,3", true),
        ("\\boxed{x=2, x=1}", "x = 1 \\text{ or } x = 2", true),
        // equations of the same line, identities
        ("\\boxed{2x - y + 1 = 0}", "y = 2x + 1", true),
        ("\\boxed{2x - y - 1 = 0}", "y = 2x + 1", false),
        ("\\boxed{2\\sin x \\cos x}", "\\sin(2x)", true),
        ("\\boxed{\\frac{\\sin x}{\\cos x}}", "\\tan x", true),
        ("\\boxed{\\sin x \\cos x}", "\\sin(2x)", false),
        // a relation whose left side names a quantity (no number in it) is its right side
        ("\\boxed{(3,2)}", "(p,q)=(3,2)", true),
        ("\\boxed{(2,3)}", "(p,q)=(3,2)", false),
        ("\\boxed{3}", "f(x) = 3", true),
        ("\\boxed{5}", "x + y = 5", true),
        ("\\boxed{0}", "a + 3z = 0", false),
        ("\\boxed{10}", "2x = 10", false),
        ("\\boxed{\\frac{1}{\\sqrt{6}}}", "\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}", true),
        // inequalities in one quantity against intervals
        ("\\boxed{(0,1)}", "0<x<1", true),
        ("\\boxed{[0,1)}", "0 \\le x < 1", true),
        ("\\boxed{(1, \\infty)}", "x > 1", true),
        ("\\boxed{x > 1}", "(1,\\infty)", true),
        ("\\boxed{(-\\infty, 2]}", "2 \\geq x", true),
        ("\\boxed{(-793, 10)}", "-793 < a < 10", true),
        ("\\boxed{[1, \\infty)}", "x > 1", false),
        ("\\boxed{0 < x < 2}", "(0,1)", false),
        ("\\boxed{(0,1)}", "0<x<1<y", false),
        // ends and entries written as decimals of two or more places: to the precision given
        // (Math-Verify's rule); a plain number keeps the relative tolerance (0.33 is not 1/3)
        ("\\boxed{[1.414214, 3.141593)}", "[\\sqrt{2}, \\pi)", true),
        ("\\boxed{(1.0, 2.50]}", "(1, 2.5]", true),
        ("\\boxed{[1.41, 3.14)}", "[\\sqrt{2}, \\pi)", true),
        ("\\boxed{(0.6,2.6667]}", "(\\frac{3}{5},\\frac{8}{3}]", true),
        (
            "\\boxed{\\begin{pmatrix}0.33\\\\0.2 \\end{pmatrix}}",
            "\\begin{pmatrix}\\frac{1}{3}\\\\ \\frac{1}{5} \\end{pmatrix}",
            true,
        ),
        ("\\boxed{[1.42, 3.14)}", "[\\sqrt{2}, \\pi)", false),
        ("\\boxed{[1.4, 3.1)}", "[\\sqrt{2}, \\pi)", false),
        ("\\boxed{(1.0, 2.50)}", "(1, 2.5]", false),
        ("\\boxed{0.33}", "1/3", false),
    ]);
}

/// Decimal commas, where configured: the completion and the gold read alike.
#[test]
fn decimal_commas_where_configured() {
    use aha_rewards::math::MathOptions;
    let comma = MathChecker::new(MathOptions { decimal_comma: true, ..MathOptions::default() });
    let point = MathChecker::default();
    let reward = |checker: &MathChecker, completion: &str, gold: &str| checker.verdict(completion, gold).reward_value();
    assert_eq!(reward(&comma, "Soucis : 2,74 $ a..", "2.74"), Some(1.0));
    assert_eq!(reward(&comma, "\\boxed{1000,99}", "1000.99"), Some(1.0));
    assert_eq!(reward(&comma, "\\boxed{0.111}", "0,111"), Some(1.0));
    assert_eq!(reward(&comma, "\\boxed{1,22}", "1.22"), Some(1.0));
    assert_eq!(reward(&comma, "\\boxed{1,22}", "122"), Some(0.0));
    assert_eq!(reward(&comma, "\\boxed{1, 2}", "\\{1, 2\\}"), Some(1.0));
    // by default a comma is a thousands separator or separates items
    assert_eq!(reward(&point, "\\boxed{1,000}", "1000"), Some(1.0));
    assert_eq!(reward(&point, "\\boxed{1,22}", "1.22"), Some(0.0));
    assert_eq!(reward(&comma, "\\boxed{1,000}", "1000"), Some(0.0));
}

/// Math-Verify's `allow_set_relation_comp` and `strict` as options: a relation as the answer
/// against a gold interval, and variables matched by position.
#[test]
fn relation_against_set_and_renamed_variables_where_configured() {
    use aha_rewards::math::MathOptions;
    let reward = |options: MathOptions, completion: &str, gold: &str| {
        MathChecker::new(options).verdict(completion, gold).reward_value()
    };
    let no_relations = || MathOptions { relation_matches_set: false, ..MathOptions::default() };
    // by default an inequality answers an interval and the other way round
    assert_eq!(reward(MathOptions::default(), "$-2 \\le x \\le 7$", "$x \\in [-2,7]$"), Some(1.0));
    assert_eq!(reward(MathOptions::default(), "$x \\in [-2,7]$", "$-2 \\le x \\le 7$"), Some(1.0));
    // off: only a gold relation is read as its interval
    assert_eq!(reward(no_relations(), "$-2 \\le x \\le 7$", "$x \\in [-2,7]$"), Some(0.0));
    assert_eq!(reward(no_relations(), "$x \\in [-2,7]$", "$-2 \\le x \\le 7$"), Some(1.0));
    assert_eq!(reward(no_relations(), "$[-2,7]$", "$-2 \\le x \\le 7$"), Some(1.0));
    let renamed = || MathOptions { rename_variables: true, ..MathOptions::default() };
    assert_eq!(reward(MathOptions::default(), "$f(y)$", "$f(x)$"), Some(0.0));
    assert_eq!(reward(renamed(), "$f(y)$", "$f(x)$"), Some(1.0));
    assert_eq!(reward(renamed(), "$a^2 + 2b$", "$x^2 + 2y$"), Some(1.0));
    assert_eq!(reward(renamed(), "$a^2 + 2b$", "$y^2 + 2x$"), Some(0.0));
    assert_eq!(reward(renamed(), "$a + b + c$", "$x + y$"), Some(0.0));
}

/// LaTeX as it reaches us: commands escaped twice (copied from JSON or Python strings), TeX's
/// control space, spacing glued to a name, ratios, `\approx` after a name.
#[test]
fn latex_as_it_reaches_us() {
    check_all(&[
        // `\\frac` outside a matrix is `\frac`; in a matrix `\\` still ends a row
        ("$\\\\left(\\\\frac{1}{5},\\\\frac{1}{6}\\\\right)$", "(\\frac15, \\frac16)", true),
        ("$-2 \\\\le x \\\\le 7$", "[-2, 7]", true),
        ("\\boxed{\\\\sqrt{2}}", "\\sqrt{2}", true),
        ("\\boxed{\\\\sqrt{3}}", "\\sqrt{2}", false),
        ("\\boxed{\\begin{pmatrix}1 \\\\ x\\end{pmatrix}}", "\\begin{pmatrix}1 \\\\ x\\end{pmatrix}", true),
        // a backslash before a space, a tab or a form feed is a space
        ("\\boxed{3\\\t4}", "34", false),
        ("\\boxed{x\\\x0c+ 1}", "x + 1", true),
        // letters glued to a group are a product (`\t` of `"\text"` read as a tab leaves `ext{13}`)
        ("$13$", "$\u{9}ext{13}$", false),
        ("$13$", "$\\text{13}$", true),
        ("\\boxed{5 cm}", "5", true),
        // `{,}` with spaces inside is a thousands separator too
        ("The final answer is $14 {, }916$. I hope it is correct.", "14916", true),
        ("\\boxed{14{ , }916}", "14916", true),
        ("\\boxed{\\{1{, }2\\}}", "\\{1, 2\\}", true),
        // `\quadx`: spacing glued to a name
        ("\\boxed{x = 1,\\quadx = 2}", "\\{1, 2\\}", true),
        // a ratio is a quotient; `12:00` has no value and so equals no number
        ("\\boxed{3:4}", "\\frac34", true),
        ("\\boxed{12:00}", "0", false),
        // `x \approx 11` names the value; after a value an approximation is dropped
        ("$x\\approx11$", "11", true),
        ("$x \\approx 11$", "12", false),
        ("\\boxed{\\frac{1}{3} \\approx 0.33}", "\\frac13", true),
        ("\\boxed{2x \\approx 11}", "11", false),
    ]);
}

/// A gold we cannot judge by value is skipped, unless the answer is written exactly as it.
#[test]
fn gold_without_value_skips_unless_written_identically() {
    assert_eq!(outcome("\\boxed{1:00}", "12:00"), None);
    assert_eq!(outcome("\\boxed{12:00}", "12:00"), Some(true));
    assert_eq!(outcome("The time is $12 : 00$", "$12:00$"), Some(true));
    assert_eq!(outcome("\\boxed{\\zzz}", "$\\zzz$"), Some(true));
    assert_eq!(outcome("\\boxed{\\zzy}", "$\\zzz$"), None);
}

/// A plain number alone whose comma cannot separate thousands has a decimal comma (Math-Verify's
/// reading of plain text); in LaTeX a comma separates items; `plain_decimal_comma = false` reads
/// it as a list.
#[test]
fn plain_numbers_with_a_decimal_comma() {
    check_all(&[
        ("1000,99", "1000.99", true),
        ("Soucis : 2,74 $ a..", "2.74", true),
        ("The mass is 0,111 kg", "0.111", true),
        ("1.22", "1,22", true),
        ("0.111", "0,111", true),
        ("<answer>1,5</answer>", "1.5", true),
        ("-3,25", "-3.25", true),
        // thousands stay thousands
        ("1,234", "1234", true),
        ("We get 12,345,678 in all", "12345678", true),
        ("1,234", "1.234", false),
        // lists and LaTeX
        ("\\boxed{1,5}", "1.5", false),
        ("$1,5$", "\\{1, 5\\}", true),
        ("The roots are 1, 5", "1.5", false),
        ("1,2,3", "1.2", false),
        ("(1,3)", "(1, 3)", true),
    ]);
    use aha_rewards::math::MathOptions;
    let lists = MathChecker::new(MathOptions { plain_decimal_comma: false, ..MathOptions::default() });
    assert_eq!(lists.verdict("1,22", "1.22").reward_value(), Some(0.0));
    assert_eq!(lists.verdict("\\boxed{2, 3}", "2,3").reward_value(), Some(1.0));
}

/// Boxes that are one answer (Math-Verify's rule, without its commas and other words), and
/// assignments against a bare list of values.
#[test]
fn joined_boxes_and_assignments_against_values() {
    assert_eq!(last_boxes("\\boxed{1} papers and \\boxed{2} bins").as_deref(), Some("1, 2"));
    assert_eq!(
        last_boxes("$$\\boxed{(3, 3)} \\text{ for part (a) and } \\boxed{(1, 1)}$$").as_deref(),
        Some("(3, 3), (1, 1)")
    );
    assert_eq!(last_boxes("$\\boxed{35} ++++++ \\boxed{4}$").as_deref(), Some("35, 4"));
    assert_eq!(last_boxes("\\boxed{3} and so \\boxed{3}").as_deref(), Some("3"));
    assert_eq!(last_boxes("\\boxed{3}, then corrected: \\boxed{4}").as_deref(), Some("4"));
    assert_eq!(last_boxes("\\boxed{1} so \\boxed{2}").as_deref(), Some("2"));
    check_all(&[
        ("$\\boxed{-5, \\frac{14}{3}}$", "\\boxed{x = -5,\\ p = \\frac{14}{3}}", true),
        ("$\\boxed{\\frac{14}{3}, -5}$", "\\boxed{x = -5,\\ p = \\frac{14}{3}}", true),
        ("$\\boxed{-5, \\frac{14}{5}}$", "\\boxed{x = -5,\\ p = \\frac{14}{3}}", false),
        ("$\\boxed{-5}$", "\\boxed{x = -5,\\ p = \\frac{14}{3}}", false),
        ("\\boxed{x = 1, y = 2}", "1, 2", true),
        ("\\boxed{x = 1, y = 3}", "1, 2", false),
        (
            "\\($y_1 = \\boxed{-2(x - 1)^2 + 5} \\) and \\( y_2 = \\boxed{3(x + 2)^2 - 2} \\)",
            "$y_{1}=-2 x^{2}+4 x+3, y_{2}=3 x^{2}+12 x+10$",
            true,
        ),
        ("\\boxed{1} papers and \\boxed{2} bins", "$\\{1, 2\\}$", true),
    ]);
}

/// A pair in parentheses against a set of two (in the order written), and a chain that does not
/// parse as a whole read as its last side.
#[test]
fn pairs_against_sets_and_last_sides_of_chains() {
    check_all(&[
        ("${1,3}$", "$(1,3)$", true),
        ("$(1,3)$", "$\\{1,3\\}$", true),
        ("${3,1}$", "$(1,3)$", false),
        ("${1,3}$", "$[1,3]$", false),
        ("${1,3,5}$", "$(1,3)$", false),
        ("$0$", "$1 = \\zzz = x = 0$", true),
        ("$1$", "$1 = \\zzz = x = 0$", false),
        ("$\\mathscr{A} = 5$", "5", true),
        ("$\\zzz$", "5", false),
    ]);
}

/// "The final answer is …" written after the last box is the writer's last word.
#[test]
fn final_answer_after_the_last_box() {
    check_all(&[
        ("so $\\boxed{255}$ more. Final Answer: The final answer is $10,455$. I hope it is correct.", "10455", true),
        ("so $\\boxed{255}$ more. Final Answer: The final answer is $10,455$. I hope it is correct.", "255", false),
        ("The final answer is 5. Checking again: \\boxed{6}", "6", true),
        ("\\boxed{6}. So the final answer is as boxed above.", "6", true),
        ("\\boxed{6}. The final answer is \\frac{12}{2}.", "6", true),
        ("\\boxed{6}. The final answer is 7.", "6", false),
    ]);
}

/// Sums, differences and products of matrices (and a scalar times one) are the matrices they
/// stand for.
#[test]
fn matrix_arithmetic() {
    let m = |rows: &str| format!("\\begin{{pmatrix}}{rows}\\end{{pmatrix}}");
    let (a, b) = (m("1 & 2 \\\\ 3 & 4"), m("5 & 6 \\\\ 7 & 8"));
    check_all(&[
        (&format!("The sum is ${a} + {b}$"), &m("6 & 8 \\\\ 10 & 12"), true),
        (&format!("${b} - {a}$"), &m("4 & 4 \\\\ 4 & 4"), true),
        (&format!("${a} {b}$"), &m("19 & 22 \\\\ 43 & 50"), true),
        (&format!("${a} \\cdot {b}$"), &m("19 & 22 \\\\ 43 & 50"), true),
        (&format!("${b} {a}$"), &m("19 & 22 \\\\ 43 & 50"), false),
        (&format!("$2 {a}$"), &m("2 & 4 \\\\ 6 & 8"), true),
        (&format!("$-{a}$"), &m("-1 & -2 \\\\ -3 & -4"), true),
        (&format!("${a} + {b}$"), &m("6 & 8 \\\\ 10 & 13"), false),
        (&format!("${a} + {}$", m("1 \\\\ 2")), &m("2 & 2 \\\\ 5 & 4"), false),
        (&format!("${a} {}$", m("1 \\\\ 1")), &m("3 \\\\ 7"), true),
        (&format!("${a} + 1$"), &m("2 & 3 \\\\ 4 & 5"), false),
    ]);
}

/// An inequality in `|z|` is the set of `z` it describes.
#[test]
fn inequalities_in_an_absolute_value() {
    check_all(&[
        (
            "$z \\in \\left[-\\frac{3}{2}, -1\\right] \\cup \\left[1, \\frac{3}{2}\\right]$",
            "$1\\leq|z|\\leq \\frac{3}{2}$",
            true,
        ),
        ("$z \\in [-2, -1] \\cup [1, 2]$", "$1\\leq|z|\\leq \\frac{3}{2}$", false),
        ("$(-2, 2)$", "$|x| < 2$", true),
        ("$[-2, 2]$", "$|x| < 2$", false),
        ("$(-\\infty, -1) \\cup (1, \\infty)$", "$|x| > 1$", true),
    ]);
}
