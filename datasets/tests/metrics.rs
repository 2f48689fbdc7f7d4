//! pass@k and maj@k against values computed by hand.

use aha_datasets::{majority_vote, normalize_answer, pass_at_k, ProblemScore, SampleOutcome, Summary};

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

#[test]
fn pass_at_k_by_hand() {
    // n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6.
    assert!(close(pass_at_k(4, 1, 2).unwrap(), 0.5));
    // n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10.
    assert!(close(pass_at_k(5, 2, 2).unwrap(), 0.7));
    // n=10, c=3, k=4: 1 - C(7,4)/C(10,4) = 1 - 35/210.
    assert!(close(pass_at_k(10, 3, 4).unwrap(), 1.0 - 35.0 / 210.0));
    // k=1 is the fraction correct.
    assert!(close(pass_at_k(8, 3, 1).unwrap(), 3.0 / 8.0));
    // Fewer incorrect samples than k: every draw of k holds a correct one.
    assert_eq!(pass_at_k(4, 3, 2), Some(1.0));
    assert_eq!(pass_at_k(4, 4, 4), Some(1.0));
    // Fewer correct samples than k still counts: n=4, c=1, k=4 draws all four.
    assert_eq!(pass_at_k(4, 1, 4), Some(1.0));
    // n=6, c=1, k=3: 1 - C(5,3)/C(6,3) = 1 - 10/20.
    assert!(close(pass_at_k(6, 1, 3).unwrap(), 0.5));
    assert_eq!(pass_at_k(4, 0, 2), Some(0.0));
    // Undefined: n < k, k = 0, c > n.
    assert_eq!(pass_at_k(3, 1, 4), None);
    assert_eq!(pass_at_k(3, 1, 0), None);
    assert_eq!(pass_at_k(3, 4, 1), None);
}

#[test]
fn pass_at_k_is_stable_for_large_n() {
    // C(1000, 500) overflows f64; the product form does not.
    let p = pass_at_k(1000, 1, 500).unwrap();
    assert!(close(p, 0.5), "{p}");
    let p = pass_at_k(1000, 10, 100).unwrap();
    // 1 - prod_{i=991}^{1000} (1 - 100/i)
    let expected = 1.0 - (991..=1000).map(|i| 1.0 - 100.0 / i as f64).product::<f64>();
    assert!(close(p, expected) && p > 0.65 && p < 0.66, "{p}");
}

#[test]
fn majority_vote_ties_go_to_the_earliest_answer() {
    let votes = |a: &[Option<&str>]| majority_vote(a);
    assert_eq!(votes(&[Some("1"), Some("2"), Some("2"), Some("1"), Some("2")]), Some(1));
    // 2 votes each for "3" and "5": "5" appeared first.
    assert_eq!(votes(&[None, Some("5"), Some("3"), Some("3"), Some("5")]), Some(1));
    // A three-way tie: the first answer.
    assert_eq!(votes(&[Some("a"), Some("b"), Some("c")]), Some(0));
    // Samples without an answer do not vote.
    assert_eq!(votes(&[None, None, Some("7")]), Some(2));
    assert_eq!(votes(&[None, None]), None);
    assert_eq!(votes(&[]), None);
}

fn outcomes(samples: &[(bool, Option<&str>)]) -> Vec<SampleOutcome> {
    samples.iter().map(|&(correct, answer)| SampleOutcome { correct, answer: answer.map(str::to_string) }).collect()
}

#[test]
fn problem_scores_by_hand() {
    // Majority "12" (wrong) beats the one correct "7".
    let s =
        ProblemScore::new(&outcomes(&[(false, Some("12")), (true, Some("7")), (false, Some("12")), (false, None)]), 4);
    assert_eq!((s.n, s.correct, s.majority, s.maj_at_k), (4, 1, Some(0), false));
    assert!(close(s.pass_at_1, 0.25));
    assert_eq!(s.pass_at_k, Some(1.0));

    // Tie 1-1 between "7" (correct, first) and "8": the earlier answer wins, so maj@k holds.
    let s = ProblemScore::new(&outcomes(&[(true, Some("7")), (false, Some("8")), (false, None), (false, None)]), 4);
    assert_eq!((s.majority, s.maj_at_k), (Some(0), true));
    // The same samples in the other order: "8" first wins the tie.
    let s = ProblemScore::new(&outcomes(&[(false, Some("8")), (true, Some("7")), (false, None), (false, None)]), 4);
    assert_eq!((s.majority, s.maj_at_k), (Some(0), false));

    // k=2 with 4 samples: pass@2 = 1 - C(3,2)/C(4,2) = 0.5; the vote uses the first two.
    let s = ProblemScore::new(
        &outcomes(&[(false, Some("1")), (false, Some("2")), (true, Some("3")), (false, Some("2"))]),
        2,
    );
    assert!(close(s.pass_at_k.unwrap(), 0.5));
    assert_eq!((s.majority, s.maj_at_k), (Some(0), false));

    // Fewer samples than k: pass@k undefined, still a pass@1 and a vote.
    let s = ProblemScore::new(&outcomes(&[(true, Some("3"))]), 4);
    assert_eq!((s.pass_at_k, s.maj_at_k), (None, true));
    assert!(close(s.pass_at_1, 1.0));

    // No answers at all: not solved by the vote.
    let s = ProblemScore::new(&outcomes(&[(false, None), (false, None)]), 2);
    assert_eq!((s.majority, s.maj_at_k, s.pass_at_k), (None, false, Some(0.0)));
}

#[test]
fn summary_means_over_problems() {
    let scores = [
        ProblemScore::new(&outcomes(&[(true, Some("1")), (false, Some("2")), (true, Some("1")), (false, None)]), 4),
        ProblemScore::new(
            &outcomes(&[(false, Some("2")), (false, Some("2")), (false, Some("2")), (false, Some("2"))]),
            4,
        ),
        ProblemScore::new(&outcomes(&[(true, Some("5"))]), 4),
    ];
    let summary = Summary::new(&scores, 4);
    assert_eq!((summary.problems, summary.k, summary.pass_at_k_undefined), (3, 4, 1));
    assert!(close(summary.pass_at_1, (0.5 + 0.0 + 1.0) / 3.0));
    assert!(close(summary.pass_at_k, (1.0 + 0.0) / 2.0));
    assert!(close(summary.maj_at_k, 2.0 / 3.0));
}

#[test]
fn answers_normalise_for_voting() {
    for (raw, normal) in [
        (" $\\boxed{ \\dfrac{1}{2} }$. ", "\\frac{1}{2}"),
        ("1,234", "1234"),
        ("-12,345.0", "-12345"),
        ("72.00", "72"),
        ("72.5", "72.5"),
        ("\\text{ odd }", "odd"),
        ("(1, 2)", "(1,2)"),
        ("\\left( 3 \\right)", "(3)"),
        ("x = 3", "x=3"),
        ("\\boxed{1}+\\boxed{2}", "\\boxed{1}+\\boxed{2}"),
    ] {
        assert_eq!(normalize_answer(raw), normal, "{raw}");
    }
}
