//! The `math` checker on (prediction, gold, verdict) cases: every normalisation, and the usual
//! ways to be wrong.

use aha_rewards::math::{MathChecker, MathOptions, Source};
use aha_rewards::{Checker, Score};
use serde_json::json;

/// `Some(true)`: reward 1; `Some(false)`: reward 0; `None`: skip (the gold cannot be judged).
type Case = (&'static str, &'static str, Option<bool>);

const Y: Option<bool> = Some(true);
const N: Option<bool> = Some(false);
const SKIP: Option<bool> = None;

/// Predictions are wrapped in `\boxed{}`.
const BOXED: &[Case] = &[
    // integers, signs, exact rationals
    ("5", "5", Y),
    ("-5", "-5", Y),
    ("5", "-5", N),
    ("+5", "5", Y),
    ("05", "5", Y),
    ("6", "5", N),
    ("10/9", "\\frac{10}{9}", Y),
    ("-\\frac{10}{9}", "-10/9", Y),
    ("\\frac{-10}{9}", "-\\frac{10}{9}", Y),
    ("\\frac{20}{18}", "\\frac{10}{9}", Y),
    ("\\frac{10}{9}", "\\frac{9}{10}", N),
    ("\\dfrac{1}{3}", "1/3", Y),
    ("\\tfrac{1}{3}", "1/3", Y),
    ("\\cfrac{1}{3}", "1/3", Y),
    ("\\frac13", "1/3", Y),
    ("\\frac3{3}", "1", Y),
    ("\\frac{1}2", "0.5", Y),
    ("2\\frac{1}{2}", "5/2", Y),
    ("2\\frac{1}{2}", "1", N),
    ("\\frac{1}{2}+\\frac{1}{3}", "\\frac{5}{6}", Y),
    ("1/2/2", "1/4", Y),
    ("2^{10}", "1024", Y),
    ("2^10", "1024", Y),
    ("2^{-1}", "0.5", Y),
    ("2^{100}", "1267650600228229401496703205376", Y),
    ("2^{100}+1", "1267650600228229401496703205376", N),
    ("5!", "120", Y),
    ("\\binom{5}{2}", "10", Y),
    ("\\dbinom{6}{3}", "20", Y),
    ("-2^2", "-4", Y),
    ("(-2)^2", "4", Y),
    ("3 \\cdot 4", "12", Y),
    ("3 \\times 4", "12", Y),
    ("12 \\div 4", "3", Y),
    ("2(3+4)", "14", Y),
    // decimals: exact unless a float literal is involved, then 1e-6
    ("0.5", "\\frac{1}{2}", Y),
    (".5", "1/2", Y),
    ("0.4", ".4", Y),
    ("1000.0", "1000", Y),
    ("0.333333", "\\frac{1}{3}", Y),
    ("0.3333", "\\frac{1}{3}", N),
    ("0.33", "1/3", N),
    ("3.14", "\\pi", N),
    ("3.1415926", "\\pi", Y),
    ("1.4142136", "\\sqrt{2}", Y),
    ("1.41", "\\sqrt{2}", N),
    ("0.1+0.2", "0.3", Y),
    ("2.50", "2.5", Y),
    ("2.5000001", "2.5", Y),
    ("2.501", "2.5", N),
    // thousands separators, spacing commands
    ("7,425,000", "7425000", Y),
    ("1{,}000", "1000", Y),
    ("1\\,000", "1000", Y),
    ("1 000", "1000", Y),
    ("1,000.99", "1000.99", Y),
    ("14{,}916", "14916", Y),
    ("1\\!000", "1000", Y),
    ("\\!5", "5", Y),
    ("3\\;\\text{cm}", "3", Y),
    // LaTeX decorations
    ("\\left( \\frac{1}{3} \\right)", "1/3", Y),
    ("\\left[ 1, 2 \\right]", "[1,2]", Y),
    ("\\displaystyle \\frac{1}{3}", "1/3", Y),
    ("\\frac{1}{3} \\text{meters}", "1/3", Y),
    ("\\frac{1}{3} \\textbf{meters}", "1/3", Y),
    ("5 \\text{ cm}", "5", Y),
    ("5 \\mbox{ cm}^2", "5", Y),
    ("5\\text{ cm}^2", "5", Y),
    ("5 cm", "5", Y),
    ("10 \\text{ dollars}", "10", Y),
    ("\\$10", "10", Y),
    ("\\$10.50", "10.5", Y),
    ("90^\\circ", "90", Y),
    ("90^{\\circ}", "90", Y),
    ("90°", "90^\\circ", Y),
    ("45^\\circ", "90", N),
    ("28\\%", "28", Y),
    ("28 \\%", "28\\%", Y),
    ("28", "28\\%", Y),
    ("0.28", "28\\%", N),
    ("\\mathrm{5}", "5", Y),
    ("\\mathbf{5}", "5", Y),
    ("{5}", "5", Y),
    ("{{5}}", "5", Y),
    // radicals, pi, e, functions: by evaluation
    ("\\sqrt{8}", "2\\sqrt{2}", Y),
    ("2\\sqrt2", "\\sqrt{8}", Y),
    ("\\sqrt{2}/2", "\\frac{1}{\\sqrt{2}}", Y),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{\\sqrt2}{2}", Y),
    ("\\sqrt{3}", "\\sqrt3", Y),
    ("\\sqrt{2}", "\\sqrt{3}", N),
    ("\\sqrt[3]{8}", "2", Y),
    ("\\sqrt[3]{-8}", "-2", Y),
    ("8^{1/3}", "2", Y),
    ("\\sqrt{4}", "2", Y),
    ("2\\pi", "\\pi \\cdot 2", Y),
    ("\\frac{\\pi}{2}", "\\pi/2", Y),
    ("\\frac{\\pi}{3}", "\\pi/2", N),
    ("\\pi r^2", "r^2\\pi", Y),
    ("e^2", "e \\cdot e", Y),
    ("\\ln(e^3)", "3", Y),
    ("\\log_2 8", "3", Y),
    ("\\log_{2}{8}", "3", Y),
    ("\\sin(\\pi/6)", "1/2", Y),
    ("\\cos\\frac{\\pi}{3}", "\\frac{1}{2}", Y),
    ("\\sin^2 x + \\cos^2 x", "1", Y),
    ("\\tan(\\pi/4)", "1", Y),
    ("\\arctan 1", "\\pi/4", Y),
    ("|-3|", "3", Y),
    ("\\left|-3\\right|", "3", Y),
    ("3+4i", "4i+3", Y),
    ("3-4i", "3+4i", N),
    ("i^2", "-1", Y),
    ("\\infty", "\\infty", Y),
    ("-\\infty", "\\infty", N),
    ("5\\sqrt{2}+1", "1+\\sqrt{50}", Y),
    // expressions with variables: random points
    ("2x+1", "1+2x", Y),
    ("2x+1", "2x-1", N),
    ("x^2-1", "(x-1)(x+1)", Y),
    ("(x+1)^2", "x^2+2x+1", Y),
    ("(x+1)^2", "x^2+x+1", N),
    ("\\frac{x}{2}", "0.5x", Y),
    ("\\frac{x^2-1}{x-1}", "x+1", Y),
    ("2y+1", "2x+1", N),
    ("2-2p", "2-2p", Y),
    ("ab", "ba", Y),
    ("a b", "ab", Y),
    ("\\sqrt{x^2}", "x", Y),
    ("x_1 + x_2", "x_2+x_1", Y),
    ("x_1 + x_2", "x_1+x_3", N),
    ("\\alpha + \\beta", "\\beta+\\alpha", Y),
    ("3k", "3", N),
    ("\\frac{1}{x}", "x^{-1}", Y),
    ("e^{x}", "\\exp(x)", Y),
    // equations: x = 3 against 3
    ("x = 3", "3", Y),
    ("x=3", "x = 3", Y),
    ("3", "x = 3", Y),
    ("x = 4", "3", N),
    ("k = \\frac{1}{3}", "1/3", Y),
    ("y = 2x+3", "y = 3 + 2x", Y),
    ("y = 2x+3", "y = 2x + 4", N),
    ("2+3=5", "5", Y),
    ("x = 2, 3", "2, 3", Y),
    ("x = 2, 3", "$2,3$", Y),
    // a plain gold `2,3` is the number 2.3 (a decimal comma, as Math-Verify reads plain text)
    ("x = 2, 3", "2,3", N),
    ("2.3", "2,3", Y),
    ("y = -\\frac{1}{2}x + \\frac{3}{4}", "2x+4y-3=0", Y),
    ("x^2/16 + y^2/12 = 1/4", "x^2/4 + y^2/3 = 1", Y),
    ("y = 2x", "2x+4y-3=0", N),
    ("0", "a + 3z = 0", N),
    ("-x > -1", "x < 1", Y),
    ("-x < -1", "x < 1", N),
    ("x != 5", "x \\neq 5", Y),
    ("x = \\frac{1}{3} \\approx 0.33", "1/3", Y),
    // tuples are ordered
    ("(1, 2)", "(1,2)", Y),
    ("(2, 1)", "(1,2)", N),
    ("(3, \\frac{\\pi}{2})", "\\left( 3, \\frac{\\pi}{2} \\right)", Y),
    ("(1,2,3)", "(1,2)", N),
    ("(0.5, 2)", "(\\frac{1}{2}, 2)", Y),
    ("(12,102)", "(12, 102)", Y),
    ("11,\\! 111,\\! 100", "11111100", Y),
    ("1,000", "1000", Y),
    // sets are unordered
    ("\\{1, 2\\}", "\\{2, 1\\}", Y),
    ("\\{1, 2\\}", "\\{1, 3\\}", N),
    ("1, 2, 3", "3, 2, 1", Y),
    ("1, 2", "1, 2, 3", N),
    ("2, 1", "\\{1,2\\}", Y),
    ("x = 1 \\text{ or } x = 2", "1, 2", Y),
    ("x=1, x=2", "2, 1", Y),
    ("1 \\pm \\sqrt{2}", "1+\\sqrt{2}, 1-\\sqrt{2}", Y),
    ("1 + \\sqrt{2}", "1 \\pm \\sqrt{2}", N),
    ("\\pm 2", "2, -2", Y),
    ("\\emptyset", "\\{\\}", Y),
    // intervals keep their ends
    ("[0,1)", "[0,1)", Y),
    ("[0,1)", "[0,9)", N),
    ("[0,9)", "(0,9)", N),
    ("(0,9]", "(0,9)", N),
    ("(-\\infty, 3)", "(-\\infty,3)", Y),
    ("(-\\infty, 3]", "(-\\infty,3)", N),
    ("(-\\infty, 0) \\cup (1, \\infty)", "(1,\\infty)\\cup(-\\infty,0)", Y),
    ("(-\\infty, 0) \\cup (1, \\infty)", "(-\\infty,0)", N),
    ("\\left[ \\frac{1}{2}, 2 \\right]", "[0.5, 2]", Y),
    // inequalities
    ("x > 3", "x > 3", Y),
    ("3 < x", "x > 3", Y),
    ("x \\geq 3", "x > 3", N),
    ("x \\ge 3", "x \\geq 3", Y),
    // matrices and vectors
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "\\begin{pmatrix}1\\\\2\\end{pmatrix}", Y),
    ("\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}", "\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}", Y),
    ("\\begin{pmatrix} 0 & 3 \\\\ 0 & 1 \\end{pmatrix}", "\\begin{pmatrix} 0 & 3 \\\\ 0 & -1 \\end{pmatrix}", N),
    ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)", Y),
    ("\\begin{bmatrix} 1 & 2 \\end{bmatrix}", "\\begin{pmatrix} 1 & 2 \\end{pmatrix}", Y),
    // multiple-choice letters
    ("C", "C", Y),
    ("(C)", "C", Y),
    ("\\text{(C)}", "C", Y),
    ("\\textbf{(C)}", "(C)", Y),
    ("C", "\\text{(C)}", Y),
    ("B", "C", N),
    ("(B)", "\\text{(C)}", N),
    // words
    ("\\text{Evelyn}", "\\text{Evelyn}", Y),
    ("Evelyn", "\\text{Evelyn}", Y),
    ("\\text{evelyn}", "Evelyn", Y),
    ("\\text{Briana}", "\\text{Evelyn}", N),
    ("\\text{odd}", "\\text{even}", N),
    ("\\text{Monday}", "Monday", Y),
    // the usual ways to be wrong
    ("", "5", N),
    ("5 or 6", "5", N),
    ("5, 6", "5", N),
    ("\\{5, 6\\}", "5", N),
    ("5 maybe 6", "5", N),
    ("x", "5", N),
    ("\\frac{1}{0}", "5", N),
    ("5/0", "5", N),
    ("5 = 6", "5", N),
    ("?", "5", N),
    ("\\frac{1}{2", "1/2", N),
    ("\\infty", "5", N),
    ("\\undefinedcommand{5}", "5", N),
    ("12", "1, 2", N),
    ("(1,2)", "[1,2]", N),
    ("\\sqrt{-1}", "1", N),
    // golds that cannot be judged: skip, never 1
    ("5", "\\frac{1}{0}", SKIP),
    ("5", "", SKIP),
    ("5", "\\unknowncommand", SKIP),
    ("5", "(((", SKIP),
    ("5", "?", SKIP),
];

fn outcome(checker: &MathChecker, completion: &str, gold: &str) -> Option<bool> {
    match checker.verdict(completion, gold).score {
        Score::Reward { reward } => Some(reward == 1.0),
        Score::Skip { .. } => None,
    }
}

#[test]
fn boxed_cases() {
    let checker = MathChecker::default();
    let mut failures = Vec::new();
    for (pred, gold, expected) in BOXED {
        let completion = format!("Some reasoning... so the answer is $\\boxed{{{pred}}}$.");
        let got = outcome(&checker, &completion, gold);
        if got != *expected {
            failures.push(format!(
                "pred {pred:?} gold {gold:?}: expected {expected:?}, got {got:?} ({})",
                checker.verdict(&completion, gold).detail
            ));
        }
    }
    assert!(BOXED.len() >= 150, "{} cases", BOXED.len());
    assert!(failures.is_empty(), "{} of {} failed:\n{}", failures.len(), BOXED.len(), failures.join("\n"));
}

/// Whole completions: extraction order, fallbacks, strict mode.
const COMPLETIONS: &[Case] = &[
    ("<think>2+2</think><answer>4</answer>", "4", Y),
    ("<think>…</think><answer>The answer is \\boxed{4}</answer>", "4", Y),
    ("<think>\\boxed{3}</think><answer>4</answer>", "4", Y),
    ("<answer>3</answer> then <answer>4</answer>", "4", Y),
    ("<answer>4</answer> then <answer>3</answer>", "4", N),
    ("First \\boxed{3}, then corrected: \\boxed{4}", "4", Y),
    ("First \\boxed{4}, then changed to \\boxed{3}", "4", N),
    ("\\boxed{\\frac{1}{2}} is it", "1/2", Y),
    ("\\fbox{7}", "7", Y),
    ("\\boxed 7 done", "7", Y),
    ("The final answer is $\\frac{14}{3}$. I hope it is correct.", "\\frac{14}{3}", Y),
    ("Final Answer: The final answer is $28 \\%$. I hope it is correct.", "28\\%", Y),
    ("So the answer is 42.", "42", Y),
    ("answer: 3/4", "0.75", Y),
    ("We compute 3 + 4 = 7 and then 7 * 6 = 42", "42", Y),
    ("We compute 3 + 4 = 7 and then 7 * 6 = 42", "7", N),
    ("The total is 1,234 apples", "1234", Y),
    ("The result is -17.", "-17", Y),
    ("No numbers at all here.", "5", N),
    ("", "5", N),
    ("Therefore $\\boxed{\\text{Evelyn}}$ is our answer.", "\\text{Evelyn}", Y),
    ("Thus $x-p=\\boxed{2-2p}$.", "2-2p", Y),
    ("polar coordinates are $\\boxed{\\left( 3, \\frac{\\pi}{2} \\right)}.$", "(3, \\frac{\\pi}{2})", Y),
    ("The answer is (B).", "B", Y),
    ("The answer is (B).", "C", N),
    ("\\boxed{\\frac{1}{2}", "1/2", N),
    ("The gold is \\boxed{5}", "The solution gives $\\boxed{5}$.", Y),
];

#[test]
fn completion_cases() {
    let checker = MathChecker::default();
    let mut failures = Vec::new();
    for (completion, gold, expected) in COMPLETIONS {
        let got = outcome(&checker, completion, gold);
        if got != *expected {
            failures.push(format!(
                "{completion:?} gold {gold:?}: expected {expected:?}, got {got:?} ({})",
                checker.verdict(completion, gold).detail
            ));
        }
    }
    assert!(failures.is_empty(), "{} failed:\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn strict_mode_needs_a_box_or_an_answer_tag() {
    let strict = MathChecker::new(MathOptions { strict: true, ..MathOptions::default() });
    assert_eq!(outcome(&strict, "So the answer is 42.", "42"), Some(false));
    assert_eq!(outcome(&strict, "the result: 42", "42"), Some(false));
    assert_eq!(outcome(&strict, "so \\boxed{42}", "42"), Some(true));
    assert_eq!(outcome(&strict, "<answer>42</answer>", "42"), Some(true));
    let lenient = MathChecker::default();
    assert_eq!(outcome(&lenient, "So the answer is 42.", "42"), Some(true));
}

#[test]
fn sources_are_configurable() {
    let only_numbers = MathChecker::new(MathOptions { sources: vec![Source::LastNumber], ..MathOptions::default() });
    assert_eq!(outcome(&only_numbers, "\\boxed{7} and then 8", "8"), Some(true));
    assert_eq!(outcome(&only_numbers, "\\boxed{7} and then 8", "7"), Some(false));
    let detail = only_numbers.verdict("\\boxed{7} and then 8", "8").detail;
    assert_eq!(detail["source"], json!("last_number"));
    assert_eq!(detail["extracted"], json!("8"));
}

#[test]
fn detail_says_what_was_extracted_and_why() {
    let checker = MathChecker::default();
    let v = checker.verdict("so \\boxed{\\frac{1}{2}}", "0.5");
    assert_eq!(v.detail["extracted"], json!("\\frac{1}{2}"));
    assert_eq!(v.detail["source"], json!("boxed"));
    assert_eq!(v.detail["why"], json!("equivalent"));
    let v = checker.verdict("nothing", "0.5");
    assert_eq!(v.detail["why"], json!("no answer found"));
    let v = checker.verdict("\\boxed{5 maybe 6}", "5");
    assert!(v.detail["why"].as_str().unwrap().starts_with("answer does not parse"), "{}", v.detail);
    let v = checker.verdict("\\boxed{5}", "\\frac{1}{0}");
    assert!(v.is_skip());
    assert!(v.detail["gold_error"].is_string());
}

#[test]
fn gold_from_the_sample_may_be_a_number() {
    let checker = MathChecker::default();
    let sample = json!({ "answer": 12 }).as_object().unwrap().clone();
    assert_eq!(checker.check("\\boxed{12}", &sample).unwrap().reward_value(), Some(1.0));
    let sample = json!({ "answer": 0.5 }).as_object().unwrap().clone();
    assert_eq!(checker.check("\\boxed{1/2}", &sample).unwrap().reward_value(), Some(1.0));
    let missing = json!({ "question": "?" }).as_object().unwrap().clone();
    let err = checker.check("\\boxed{12}", &missing).unwrap_err();
    assert_eq!(err.field(), "answer");
    let bad = json!({ "answer": [1] }).as_object().unwrap().clone();
    assert!(checker.check("\\boxed{12}", &bad).is_err());
}

#[test]
fn a_megabyte_completion_is_judged_quickly() {
    let checker = MathChecker::default();
    let filler = "Let me think about 12345 and {{((\\frac{1}{2} ".repeat(25_000);
    let completion = format!("{filler} so the answer is \\boxed{{42}}");
    assert!(completion.len() > 1_000_000);
    let start = std::time::Instant::now();
    assert_eq!(outcome(&checker, &completion, "42"), Some(true));
    // Unbalanced braces everywhere, no box, no tags.
    let nasty = "\\boxed{".repeat(150_000);
    assert_eq!(outcome(&checker, &nasty, "42"), Some(false));
    let deep = format!("\\boxed{{{}1{}}}", "(".repeat(100_000), ")".repeat(100_000));
    assert_eq!(outcome(&checker, &deep, "1"), Some(false));
    let deep_short = format!("\\boxed{{{}1{}}}", "(".repeat(500), ")".repeat(500));
    assert_eq!(outcome(&checker, &deep_short, "1"), Some(false), "nesting beyond the bound is rejected");
    assert!(start.elapsed().as_secs_f64() < 2.0, "took {:?}", start.elapsed());
}
