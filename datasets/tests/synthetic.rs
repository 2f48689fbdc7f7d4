//! Built-in tasks: seeded, within their knobs, and accepted by the real checkers (aha-rewards) on
//! their witness answers.

use aha_datasets::{Addition, Arithmetic, BuiltinSpec, BuiltinTask, Countdown, Multiplication, ToolUse};
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
            let expression = p.fields["expression"].as_str().unwrap();
            assert_eq!(expression.matches([' ']).count(), 2 * task.operations, "{expression}");
            assert_eq!(p.question, format!("What is {expression}?"));
            let answer = p.fields["answer"].as_str().unwrap();
            let right = checker.check(&format!("<answer>{answer}</answer>"), &p.fields).unwrap();
            assert_eq!(right.reward_value(), Some(1.0), "{expression} = {answer}: {:?}", right.detail);
            let wrong = checker.check(&format!("<answer>{answer}1</answer>"), &p.fields).unwrap();
            assert_eq!(wrong.reward_value(), Some(0.0));
        }
    }
}

#[test]
fn arithmetic_by_hand() {
    let p = &Arithmetic { digits: 2, operations: 3 }.generate(1, 5).unwrap()[0];
    // Evaluate the expression independently: precedence of * over + and -.
    let tokens: Vec<&str> = p.fields["expression"].as_str().unwrap().split(' ').collect();
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
    assert_eq!(p.fields["answer"], json!(terms.iter().sum::<i128>().to_string()));
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
            let numbers: Vec<u64> = serde_json::from_value(p.fields["numbers"].clone()).unwrap();
            let target = p.fields["target"].as_u64().unwrap();
            assert_eq!(numbers.len(), task.numbers);
            assert!(numbers.iter().all(|&n| (1..=u64::from(task.max_number)).contains(&n)), "{numbers:?}");
            assert!((1..=u64::from(task.max_target)).contains(&target));
            let solution = p.fields["solution"].as_str().unwrap();
            let verdict = checker.check(&format!("<think>...</think> <answer>{solution}</answer>"), &p.fields).unwrap();
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

#[test]
fn addition_worked_solution_by_hand() {
    // 478 + 356: 8+6 = 14 (write 4, carry 1), 7+5+1 = 13 (write 3, carry 1), 4+3+1 = 8.
    assert_eq!(
        Addition::worked_completion(478, 356),
        " <think> ones: 8+6=14, write 4 carry 1. tens: 7+5+1=13, write 3 carry 1. hundreds: 4+3+1=8, write 8. \
         </think> <answer>834</answer>"
    );
    // A carry out of the last column writes the leading 1.
    assert_eq!(
        Addition::worked_completion(95, 7),
        " <think> ones: 5+7=12, write 2 carry 1. tens: 9+0+1=10, write 0 carry 1. write 1. \
         </think> <answer>102</answer>"
    );
    assert_eq!(Addition::guessed_completion(834), " <think> </think> <answer>834</answer>");
    assert!(Addition::is_worked(&Addition::worked_completion(1, 2)));
    assert!(!Addition::is_worked(&Addition::guessed_completion(3)));
}

#[test]
fn addition_problems_and_both_answer_forms_are_judged_right() {
    let checker = MathChecker::default();
    for digits in [1, 3, 6] {
        let problems = Addition { digits }.generate(40, 3).unwrap();
        for p in &problems {
            let (a, b) = Addition::operands(p).unwrap();
            assert_eq!(a.to_string().len(), digits as usize);
            assert_eq!(p.question, format!("What is {a} + {b}?"));
            assert_eq!(p.fields["answer"], json!((a + b).to_string()));
            // The worked text's digits, read back from its "write d" steps, spell the sum.
            let worked = Addition::worked_completion(a, b);
            let written: String =
                worked.split("write ").skip(1).map(|s| &s[..1]).collect::<String>().chars().rev().collect();
            assert_eq!(written.trim_start_matches('0'), (a + b).to_string().trim_start_matches('0'), "{worked}");
            for text in [worked, Addition::guessed_completion(a + b)] {
                let verdict = checker.check(&format!("Assistant:{text}"), &p.fields).unwrap();
                assert_eq!(verdict.reward_value(), Some(1.0), "{text}: {:?}", verdict.detail);
            }
            let wrong = checker.check(&Addition::guessed_completion(a + b + 1), &p.fields).unwrap();
            assert_eq!(wrong.reward_value(), Some(0.0));
        }
    }
    let spec: BuiltinSpec = "builtin:addition:digits=4,count=5".parse().unwrap();
    assert_eq!(spec.task, BuiltinTask::Addition(Addition { digits: 4 }));
    assert_eq!(spec.task.checker(), "math");
    assert!("builtin:addition:digits=7".parse::<BuiltinSpec>().is_err());
}

#[test]
fn multiplication_problems_are_products_the_math_checker_reads() {
    let problems = Multiplication { digits: 3 }.generate(50, 5).unwrap();
    assert_eq!(problems, Multiplication { digits: 3 }.generate(50, 5).unwrap());
    let checker = MathChecker::default();
    for p in &problems {
        let (a, b) = Multiplication::operands(p).unwrap();
        assert!((100..1000).contains(&a) && (100..1000).contains(&b), "{}", p.question);
        assert_eq!(p.question, format!("What is {a} * {b}?"));
        assert_eq!(p.fields["answer"], (a * b).to_string());
        let called = ToolUse::tool_completion(a, b);
        assert_eq!(checker.check(&called, &p.fields).unwrap().reward_value(), Some(1.0), "{called}");
        let guessed = ToolUse::guessed_completion(a, b, a * b + 1);
        assert_eq!(checker.check(&guessed, &p.fields).unwrap().reward_value(), Some(0.0), "{guessed}");
    }
    let spec: BuiltinSpec = "builtin:multiplication:digits=2,count=5".parse().unwrap();
    assert_eq!(spec.task, BuiltinTask::Multiplication(Multiplication { digits: 2 }));
    assert_eq!(spec.task.checker(), "math");
    assert_eq!(spec.generate(1).unwrap().len(), 5);
    assert!("builtin:multiplication:digits=7".parse::<BuiltinSpec>().is_err());
}
