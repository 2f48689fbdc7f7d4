//! Built-in tasks: seeded, within their knobs, and accepted by the real checkers (aha-rewards) on
//! their witness answers.

use aha_datasets::{Arithmetic, BuiltinSpec, BuiltinTask, Countdown};
use aha_rewards::countdown::CountdownChecker;
use aha_rewards::math::MathChecker;
use aha_rewards::Checker;
use serde_json::json;

#[test]
fn arithmetic_answers_are_right_by_the_math_checker() {
    let checker = MathChecker::default();
    for task in
        [Arithmetic { digits: 1, operations: 1 }, Arithmetic::default(), Arithmetic { digits: 9, operations: 8 }]
    {
        let problems = task.generate(50, 11).unwrap();
        assert_eq!(problems.len(), 50);
        for p in &problems {
            let expression = p.sample["expression"].as_str().unwrap();
            assert_eq!(expression.matches([' ']).count(), 2 * task.operations, "{expression}");
            assert_eq!(p.question, format!("What is {expression}?"));
            let answer = p.sample["answer"].as_str().unwrap();
            let right = checker.check(&format!("<answer>{answer}</answer>"), &p.sample).unwrap();
            assert_eq!(right.reward_value(), Some(1.0), "{expression} = {answer}: {:?}", right.detail);
            let wrong = checker.check(&format!("<answer>{answer}1</answer>"), &p.sample).unwrap();
            assert_eq!(wrong.reward_value(), Some(0.0));
        }
    }
}

#[test]
fn arithmetic_by_hand() {
    let p = &Arithmetic { digits: 2, operations: 3 }.generate(1, 5).unwrap()[0];
    // Evaluate the expression independently: precedence of * over + and -.
    let tokens: Vec<&str> = p.sample["expression"].as_str().unwrap().split(' ').collect();
    let mut terms: Vec<i128> = vec![tokens[0].parse().unwrap()];
    for pair in tokens[1..].chunks(2) {
        let n: i128 = pair[1].parse().unwrap();
        match pair[0] {
            "*" => *terms.last_mut().unwrap() *= n,
            "+" => terms.push(n),
            "-" => terms.push(-n),
            op => panic!("{op}"),
        }
    }
    assert_eq!(p.sample["answer"], json!(terms.iter().sum::<i128>().to_string()));
}

#[test]
fn countdown_witnesses_are_accepted_by_the_countdown_checker() {
    let checker = CountdownChecker::default();
    for task in [
        Countdown::default(),
        Countdown { numbers: 2, max_number: 10, max_target: 100 },
        Countdown { numbers: 6, max_number: 25, max_target: 500 },
    ] {
        for p in task.generate(40, 3).unwrap() {
            let numbers: Vec<u64> = serde_json::from_value(p.sample["numbers"].clone()).unwrap();
            let target = p.sample["target"].as_u64().unwrap();
            assert_eq!(numbers.len(), task.numbers);
            assert!(numbers.iter().all(|&n| (1..=u64::from(task.max_number)).contains(&n)), "{numbers:?}");
            assert!((1..=u64::from(task.max_target)).contains(&target));
            let solution = p.sample["solution"].as_str().unwrap();
            let verdict = checker.check(&format!("<think>...</think> <answer>{solution}</answer>"), &p.sample).unwrap();
            assert_eq!(
                verdict.reward_value(),
                Some(1.0),
                "{solution} = {target} from {numbers:?}: {:?}",
                verdict.detail
            );
            assert!(p.question.contains(&format!("equals {target}.")), "{}", p.question);
        }
    }
}

#[test]
fn same_seed_same_problems() {
    let a = Countdown::default().generate(10, 9).unwrap();
    assert_eq!(a, Countdown::default().generate(10, 9).unwrap());
    assert_ne!(a, Countdown::default().generate(10, 10).unwrap());
    let b = Arithmetic::default().generate(10, 9).unwrap();
    assert_eq!(b, Arithmetic::default().generate(10, 9).unwrap());
    assert_eq!(b[3].id, "arithmetic-9-3");
}

#[test]
fn builtin_specs_parse_with_knobs() {
    let spec: BuiltinSpec = "builtin:arithmetic:digits=4,ops=3,count=7,seed=2".parse().unwrap();
    assert_eq!(spec.task, BuiltinTask::Arithmetic(Arithmetic { digits: 4, operations: 3 }));
    assert_eq!((spec.count, spec.seed), (7, Some(2)));
    assert_eq!(spec.generate(0).unwrap(), Arithmetic { digits: 4, operations: 3 }.generate(7, 2).unwrap());

    let spec: BuiltinSpec = "builtin:countdown".parse().unwrap();
    assert_eq!((spec.task, spec.count, spec.seed), (BuiltinTask::Countdown(Countdown::default()), 100, None));
    assert_eq!(spec.task.checker(), "countdown");

    for (bad, message) in [
        ("builtin:sudoku", "unknown built-in task \"sudoku\""),
        ("builtin:countdown:digits=3", "unknown option \"digits\" for countdown"),
        ("builtin:arithmetic:digits=12", "digits must be 1..=9"),
        ("builtin:arithmetic:count=x", "count: \"x\" is not a non-negative integer"),
        ("builtin:countdown:numbers", "option \"numbers\" is not key=value"),
    ] {
        let error = bad.parse::<BuiltinSpec>().unwrap_err().to_string();
        assert!(error.contains(message), "{bad}: {error}");
    }
}
