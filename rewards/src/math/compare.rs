//! Equivalence of two parsed answers: exact rationals, 1e-6 relative when a decimal literal is
//! involved, numeric evaluation for radicals/π/e/functions (1e-9 relative, and 0 only for a
//! value that is 0 up to its rounding error), random points for expressions with variables,
//! ordered tuples, unordered sets, intervals with their ends, equations and inequalities.

use std::collections::{BTreeMap, BTreeSet};

use num_complex::Complex64;
use num_rational::BigRational;
use num_traits::{Signed, Zero};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::eval::{approx, exact, has_float, has_number, is_scalar, numeric, variables, Approx, Env};
use super::lex::{Const, Rel};
use super::parse::Expr;

/// Points at which expressions with variables are compared.
const POINTS: usize = 6;
/// Points that must evaluate to finite values on both sides.
const MIN_GOOD_POINTS: usize = 3;
/// Most elements of a set / tuple / list compared.
const MAX_ITEMS: usize = 64;
/// Most `±` signs expanded (2^n answers).
const MAX_PLUS_MINUS: usize = 4;

/// Comparison settings.
#[derive(Debug, Clone, Copy)]
pub struct Compare {
    pub seed: u64,
    /// Tolerance relative to the gold when a decimal literal appears.
    pub float_tolerance: f64,
    /// Relative tolerance of numeric evaluation when both sides are exact-looking.
    pub numeric_tolerance: f64,
    /// A relation in one quantity as the answer matches a gold interval (see `MathOptions`).
    pub relation_matches_set: bool,
    /// The answer's variables are renamed to the gold's by position (see `MathOptions`).
    pub rename_variables: bool,
}

impl Default for Compare {
    fn default() -> Self {
        Compare {
            seed: 0,
            float_tolerance: 1e-6,
            numeric_tolerance: 1e-9,
            relation_matches_set: true,
            rename_variables: false,
        }
    }
}

impl Compare {
    /// Whether `pred` answers `gold`.
    pub fn answers(&self, gold: &Expr, pred: &Expr) -> bool {
        let gold = expand_plus_minus(gold);
        let pred = expand_plus_minus(pred);
        let (gold, pred) = (matrix_value(&gold).unwrap_or(gold), matrix_value(&pred).unwrap_or(pred));
        if self.rename_variables {
            if let Some(renamed) = renamed_like(&gold, &pred) {
                return self.top(&gold, &renamed);
            }
        }
        self.top(&gold, &pred)
    }

    fn top(&self, gold: &Expr, pred: &Expr) -> bool {
        // `p = 5, q = 2`: by variable against other assignments, in the order written against a
        // tuple `(5, 2)`.
        match (assignments(gold), assignments(pred)) {
            (Some(g), Some(p)) => {
                return g.len() == p.len()
                    && g.iter().all(|(name, gv)| p.iter().any(|(pn, pv)| pn == name && self.same(gv, pv)))
            }
            // Against a bare list of values (`x_1 = a, x_2 = b` and `a, b`): the values as a set.
            (Some(g), None) if matches!(pred, Expr::List(_)) => {
                let values: Vec<&Expr> = g.iter().map(|(_, value)| *value).collect();
                return as_collection(pred).is_some_and(|p| self.unordered(&values, &p));
            }
            (None, Some(p)) if matches!(gold, Expr::List(_)) => {
                let values: Vec<&Expr> = p.iter().map(|(_, value)| *value).collect();
                return as_collection(gold).is_some_and(|g| self.unordered(&g, &values));
            }
            (Some(g), None) => return self.top(&tuple_of(&g), pred),
            (None, Some(p)) => return self.top(gold, &tuple_of(&p)),
            (None, None) => {}
        }
        // "x = 3" against "3" (either side), and equation chains "2 + 3 = 5".
        if let Some(rhs) = solved_value(gold) {
            if !matches!(pred, Expr::Relation(..)) || solved_value(pred).is_some() {
                let p = solved_value(pred).unwrap_or(pred);
                if self.same(rhs, p) {
                    return true;
                }
            }
        } else if let Some(rhs) = solved_value(pred) {
            if !matches!(gold, Expr::Relation(..)) && self.same(gold, rhs) {
                return true;
            }
        }
        // `(p, q) = (3, 2)`, `f(x) = 3`, `x + y = 5` against a bare value: a left side without a
        // number names the value on the right (`2x = 10` is an equation, as in Math-Verify).
        if let Some(value) = named_value(gold) {
            // `x \in [-2, 7]` against `-2 \le x \le 7`: the interval against the inequality's.
            if !matches!(pred, Expr::Relation(..)) || (is_interval_like(value) && interval_of(pred).is_some()) {
                return self.top(value, pred);
            }
        }
        if let Some(value) = named_value(pred) {
            if !matches!(gold, Expr::Relation(..)) || (is_interval_like(value) && interval_of(gold).is_some()) {
                return self.top(gold, value);
            }
        }
        // `0 < x \le 1` against `(0, 1]`, `x > 1` against `(1, \infty)`.
        if is_interval_like(pred) {
            if let Some(interval) = interval_of(gold) {
                return self.same(&interval, pred);
            }
        }
        if is_interval_like(gold) && self.relation_matches_set {
            if let Some(interval) = interval_of(pred) {
                return self.same(gold, &interval);
            }
        }
        // A bare list of "x = a" items against a set of values.
        let gold_items = as_collection(gold);
        let pred_items = as_collection(pred);
        if let (Some(g), Some(p)) = (&gold_items, &pred_items) {
            return self.unordered(g, p);
        }
        // A one-element set against a plain value.
        if let (Some(g), None) = (&gold_items, &pred_items) {
            if g.len() == 1 {
                return self.top(g[0], pred);
            }
        }
        if let (None, Some(p)) = (&gold_items, &pred_items) {
            if p.len() == 1 {
                return self.top(gold, p[0]);
            }
        }
        self.same(gold, pred)
    }

    /// Structural + numeric equality of two answers.
    pub fn same(&self, gold: &Expr, pred: &Expr) -> bool {
        match (gold, pred) {
            (Expr::Group { open: go, close: gc, items: gi }, Expr::Group { open: po, close: pc, items: pi }) => {
                if gi.len() != pi.len() || gi.len() > MAX_ITEMS {
                    return false;
                }
                let interval = gi.len() == 2 && (is_interval(*go, *gc) || is_interval(*po, *pc));
                if interval && (go != po || gc != pc) {
                    return false;
                }
                if !interval && (go != po || gc != pc) && !(is_paren_like(*go, *gc) && is_paren_like(*po, *pc)) {
                    return false;
                }
                gi.iter().zip(pi).all(|(g, p)| self.same_entry(g, p))
            }
            (Expr::Set(g), Expr::Set(p)) | (Expr::Union(g), Expr::Union(p)) | (Expr::List(g), Expr::List(p)) => {
                self.unordered(&g.iter().collect::<Vec<_>>(), &p.iter().collect::<Vec<_>>())
            }
            // `(1, 3)` against `\{1, 3\}`: a pair in parentheses (an open interval or a tuple)
            // against a set of two, in the order written (Math-Verify's rule).
            (Expr::Group { open: '(', close: ')', items: pair }, Expr::Set(set))
            | (Expr::Set(set), Expr::Group { open: '(', close: ')', items: pair })
                if pair.len() == 2 && set.len() == 2 =>
            {
                let (g, p) = if matches!(gold, Expr::Group { .. }) { (pair, set) } else { (set, pair) };
                g.iter().zip(p).all(|(a, b)| self.same_entry(a, b))
            }
            (Expr::Set(g), Expr::Const(Const::EmptySet)) | (Expr::Const(Const::EmptySet), Expr::Set(g)) => g.is_empty(),
            (Expr::Const(Const::EmptySet), Expr::Const(Const::EmptySet)) => true,
            (Expr::Matrix(g), Expr::Matrix(p)) => {
                g.len() == p.len()
                    && g.iter()
                        .zip(p)
                        .all(|(gr, pr)| gr.len() == pr.len() && gr.iter().zip(pr).all(|(a, b)| self.same_entry(a, b)))
            }
            // A column vector written as a matrix against a tuple.
            (Expr::Matrix(m), Expr::Group { open: '(', close: ')', items })
            | (Expr::Group { open: '(', close: ')', items }, Expr::Matrix(m)) => {
                let flat: Vec<&Expr> = if m.iter().all(|r| r.len() == 1) {
                    m.iter().map(|r| &r[0]).collect()
                } else if m.len() == 1 {
                    m[0].iter().collect()
                } else {
                    return false;
                };
                flat.len() == items.len() && flat.iter().zip(items).all(|(a, b)| self.same_entry(a, b))
            }
            (Expr::Relation(gl, gr, grr), Expr::Relation(pl, pr, prr)) => {
                (gr == pr && self.same(gl, pl) && self.same(grr, prr))
                    || (flip(*gr) == *pr && self.same(gl, prr) && self.same(grr, pl))
                    || self.proportional_relations(gl, *gr, grr, pl, *pr, prr)
            }
            // `\left[\begin{array}..\end{array}\right]`
            (_, Expr::Group { open: '[', close: ']', items })
                if items.len() == 1 && matches!(items[0], Expr::Matrix(_)) =>
            {
                self.same(gold, &items[0])
            }
            _ if is_scalar(gold) && is_scalar(pred) => self.scalar(gold, pred),
            _ => false,
        }
    }

    /// An entry of a tuple, an interval or a matrix. A decimal written with two or more places
    /// is compared to the precision given (Math-Verify's rule for approximate ends): `(0.6,
    /// 2.6667]` is `(\frac35, \frac83]`, the gold rounded to four places.
    fn same_entry(&self, gold: &Expr, pred: &Expr) -> bool {
        if self.same(gold, pred) {
            return true;
        }
        let Some(places) = decimal_places(pred).filter(|&k| k >= 2) else { return false };
        let env = Point(BTreeMap::new());
        let (Some(g), Some(p)) = (approx(gold, &env), approx(pred, &env)) else { return false };
        if !g.is_finite() || g.value.im != 0.0 || p.value.im != 0.0 {
            return false;
        }
        let half_unit = 0.5 * 10f64.powi(-(places as i32));
        (g.value.re - p.value.re).abs() <= half_unit * (1.0 + 1e-9) + g.error + p.error
    }

    /// `2x + 4y - 3 = 0` against `y = -x/2 + 3/4`: (lhs - rhs) of one side is a constant non-zero
    /// multiple of the other's at every sample point (a positive multiple for inequalities with the
    /// same direction, a negative one for opposite directions).
    fn proportional_relations(&self, gl: &Expr, gr: Rel, grr: &Expr, pl: &Expr, pr: Rel, prr: &Expr) -> bool {
        let sign = if gr == pr {
            1.0
        } else if flip(gr) == pr && gr != pr {
            -1.0
        } else {
            return false;
        };
        if ![gl, grr, pl, prr].iter().all(|e| is_scalar(e)) {
            return false;
        }
        let g = Expr::Sub(Box::new(gl.clone()), Box::new(grr.clone()));
        let p = Expr::Sub(Box::new(pl.clone()), Box::new(prr.clone()));
        let mut vars = BTreeSet::new();
        variables(&g, &mut vars);
        variables(&p, &mut vars);
        if vars.is_empty() {
            return false;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ 0x5eed);
        let mut ratio: Option<f64> = None;
        let mut good = 0;
        for _ in 0..POINTS {
            let point = Point(vars.iter().map(|v| (v.clone(), rng.random_range(0.3..2.7))).collect());
            let (Some(a), Some(b)) = (numeric(&g, &point), numeric(&p, &point)) else { return false };
            if !(a.re.is_finite() && b.re.is_finite()) || a.im.abs() > 1e-12 || b.im.abs() > 1e-12 {
                continue;
            }
            if a.re.abs() < 1e-12 || b.re.abs() < 1e-12 {
                if (a.re.abs() < 1e-12) != (b.re.abs() < 1e-12) {
                    return false;
                }
                continue;
            }
            let r = b.re / a.re;
            match ratio {
                None => ratio = Some(r),
                Some(r0) => {
                    if (r - r0).abs() > self.numeric_tolerance.max(1e-9) * r0.abs().max(1.0) * 1e3 {
                        return false;
                    }
                }
            }
            good += 1;
        }
        match ratio {
            Some(r) if good >= MIN_GOOD_POINTS => {
                if gr == Rel::Eq || gr == Rel::Ne {
                    true
                } else {
                    r * sign > 0.0
                }
            }
            _ => false,
        }
    }

    /// Every element of one side matches some element of the other (set semantics).
    fn unordered(&self, gold: &[&Expr], pred: &[&Expr]) -> bool {
        if gold.len() > MAX_ITEMS || pred.len() > MAX_ITEMS {
            return false;
        }
        let covers = |a: &[&Expr], b: &[&Expr], gold_first: bool| {
            a.iter().all(|x| b.iter().any(|y| if gold_first { self.top(x, y) } else { self.top(y, x) }))
        };
        covers(gold, pred, true) && covers(pred, gold, false)
    }

    /// Two arithmetic expressions.
    pub fn scalar(&self, gold: &Expr, pred: &Expr) -> bool {
        let float = has_float(gold) || has_float(pred);
        let tolerance = if float { self.float_tolerance } else { self.numeric_tolerance };
        let mut vars = BTreeSet::new();
        variables(gold, &mut vars);
        variables(pred, &mut vars);
        if vars.is_empty() {
            if let (Some(g), Some(p)) = (exact(gold), exact(pred)) {
                return if float { within(&g, &p, self.float_tolerance) } else { g == p };
            }
            let env = Point(BTreeMap::new());
            return match (approx(gold, &env), approx(pred, &env)) {
                (Some(g), Some(p)) => close(g, p, tolerance),
                _ => false,
            };
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let mut good = 0;
        for _ in 0..POINTS {
            let point = Point(vars.iter().map(|v| (v.clone(), rng.random_range(0.3..2.7))).collect());
            let (Some(g), Some(p)) = (approx(gold, &point), approx(pred, &point)) else { return false };
            match (g.is_finite(), p.is_finite()) {
                (true, true) => {
                    if !close(g, p, tolerance) {
                        return false;
                    }
                    good += 1;
                }
                (false, false) => {}
                _ => return false,
            }
        }
        good >= MIN_GOOD_POINTS
    }
}

/// Most entries of a matrix computed from a sum or product of matrices.
const MAX_MATRIX_ENTRIES: usize = 64;

/// The matrix a sum, difference or product of matrices (or a scalar times one) stands for, its
/// entries left as expressions: `\begin{pmatrix}1&2\\3&4\end{pmatrix} + \begin{pmatrix}5&6\\7&8\end{pmatrix}`
/// is the matrix of `1 + 5`, … `None` when `e` is no such arithmetic, or the shapes do not fit.
fn matrix_value(e: &Expr) -> Option<Expr> {
    if !matches!(e, Expr::Add(..) | Expr::Sub(..) | Expr::Mul(..) | Expr::Neg(_)) {
        return None;
    }
    let Some(Ok(rows)) = matrix_rows(e) else { return None };
    Some(Expr::Matrix(rows))
}

/// `None`: a scalar; `Some(Err)`: matrices that do not combine; `Some(Ok(rows))`: a matrix.
fn matrix_rows(e: &Expr) -> Option<Result<Vec<Vec<Expr>>, ()>> {
    let shape = |m: &Vec<Vec<Expr>>| (m.len(), m.first().map_or(0, Vec::len));
    let rectangular = |m: &Vec<Vec<Expr>>| m.iter().all(|row| row.len() == shape(m).1);
    let bx = Box::new;
    let map = |m: Vec<Vec<Expr>>, f: &dyn Fn(Expr) -> Expr| -> Vec<Vec<Expr>> {
        m.into_iter().map(|row| row.into_iter().map(f).collect()).collect()
    };
    match e {
        Expr::Matrix(rows) => Some(if rectangular(rows) && rows.len() * shape(rows).1 <= MAX_MATRIX_ENTRIES {
            Ok(rows.clone())
        } else {
            Err(())
        }),
        Expr::Neg(a) => Some(matrix_rows(a)?.map(|m| map(m, &|x| Expr::Neg(bx(x))))),
        Expr::Add(a, b) | Expr::Sub(a, b) => {
            let (a, b) = match (matrix_rows(a), matrix_rows(b)) {
                (None, None) => return None,
                (Some(Ok(a)), Some(Ok(b))) if shape(&a) == shape(&b) => (a, b),
                _ => return Some(Err(())),
            };
            let add = matches!(e, Expr::Add(..));
            Some(Ok(a
                .into_iter()
                .zip(b)
                .map(|(ra, rb)| {
                    ra.into_iter()
                        .zip(rb)
                        .map(|(x, y)| if add { Expr::Add(bx(x), bx(y)) } else { Expr::Sub(bx(x), bx(y)) })
                        .collect()
                })
                .collect()))
        }
        Expr::Mul(a, b) => match (matrix_rows(a), matrix_rows(b)) {
            (None, None) => None,
            (Some(Ok(m)), None) if is_scalar(b) => Some(Ok(map(m, &|x| Expr::Mul(bx(x), b.clone())))),
            (None, Some(Ok(m))) if is_scalar(a) => Some(Ok(map(m, &|x| Expr::Mul(a.clone(), bx(x))))),
            (Some(Ok(a)), Some(Ok(b)))
                if shape(&a).1 == shape(&b).0 && shape(&a).0 * shape(&b).1 <= MAX_MATRIX_ENTRIES =>
            {
                let (n, inner, m) = (shape(&a).0, shape(&a).1, shape(&b).1);
                Some(Ok((0..n)
                    .map(|i| {
                        (0..m)
                            .map(|j| {
                                (0..inner)
                                    .map(|k| Expr::Mul(bx(a[i][k].clone()), bx(b[k][j].clone())))
                                    .reduce(|acc, x| Expr::Add(bx(acc), bx(x)))
                                    .unwrap_or(Expr::Num { value: BigRational::zero(), float: false })
                            })
                            .collect()
                    })
                    .collect()))
            }
            _ => Some(Err(())),
        },
        _ => None,
    }
}

/// `pred` with its variables renamed to `gold`'s, paired in sorted order, when both have the
/// same number of variables and they differ (`f(y)` -> `f(x)`).
fn renamed_like(gold: &Expr, pred: &Expr) -> Option<Expr> {
    let (mut gold_vars, mut pred_vars) = (BTreeSet::new(), BTreeSet::new());
    variables(gold, &mut gold_vars);
    variables(pred, &mut pred_vars);
    if gold_vars.len() != pred_vars.len() || gold_vars == pred_vars {
        return None;
    }
    let names: BTreeMap<&String, &String> = pred_vars.iter().zip(&gold_vars).collect();
    Some(pred.rewrite(&mut |e| match e {
        Expr::Var(name) => names.get(name).map(|to| Expr::Var((*to).clone())),
        _ => None,
    }))
}

/// Equal to within `tolerance` relative to the gold. A value that is zero up to its rounding
/// error equals only another such value: smallness alone (`e^{-40}`) never makes a number 0.
fn close(g: Approx, p: Approx, tolerance: f64) -> bool {
    if g.is_nan() || p.is_nan() {
        return false;
    }
    if !g.is_finite() || !p.is_finite() {
        return g.value == p.value;
    }
    if g.is_zero() || p.is_zero() {
        return g.is_zero() && p.is_zero();
    }
    (g.value - p.value).norm() <= tolerance * g.value.norm() + g.error + p.error
}

/// Exact values, one of them written as a decimal: equal to within `tolerance` relative to the
/// gold, and an exact 0 only to an exact 0.
fn within(gold: &BigRational, pred: &BigRational, tolerance: f64) -> bool {
    if gold.is_zero() || pred.is_zero() {
        return gold == pred;
    }
    // The tolerance as the decimal it was written as (1e-6 is exactly 1/10^6, so 0.333333
    // against 1/3, off by exactly 1e-6 of it, is in).
    let Ok(tolerance) = super::parse::parse_decimal(&format!("{tolerance:e}")) else { return false };
    (gold - pred).abs() <= tolerance * gold.abs()
}

struct Point(BTreeMap<String, f64>);

impl Env for Point {
    fn get(&self, name: &str) -> Option<Complex64> {
        self.0.get(name).map(|&v| Complex64::new(v, 0.0))
    }
}

fn is_interval(open: char, close: char) -> bool {
    // `[a, b]`, `[a, b)`, `(a, b]`; `(a, b)` is a tuple or an open interval, compared as written.
    open == '[' || close == ']'
}

fn is_paren_like(open: char, close: char) -> bool {
    open == '(' && close == ')'
}

fn flip(rel: Rel) -> Rel {
    match rel {
        Rel::Lt => Rel::Gt,
        Rel::Gt => Rel::Lt,
        Rel::Le => Rel::Ge,
        Rel::Ge => Rel::Le,
        other => other,
    }
}

/// For `x = 3` (a variable, or anything non-numeric, on the left) and chains `a = b = c`: the
/// last right-hand side.
fn solved_value(e: &Expr) -> Option<&Expr> {
    match e {
        Expr::Relation(lhs, Rel::Eq, rhs) => {
            let mut vars = BTreeSet::new();
            variables(rhs, &mut vars);
            let mut lhs_vars = BTreeSet::new();
            variables(lhs, &mut lhs_vars);
            match &**lhs {
                Expr::Var(_) => Some(rhs),
                Expr::Relation(..) => Some(rhs),
                // `2 + 3 = 5`; not `a + 3z = 0`, which is an equation, not a value.
                _ if vars.is_empty() && lhs_vars.is_empty() => Some(rhs),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The places after the point of a decimal literal (`-2.6667`: 4), counted from its value, so
/// trailing zeros do not count.
fn decimal_places(e: &Expr) -> Option<u32> {
    match e {
        Expr::Neg(inner) => decimal_places(inner),
        Expr::Num { value, float: true } => {
            let denominator = value.denom();
            let mut power = num_bigint::BigInt::from(1u32);
            for places in 0..=30 {
                if (&power % denominator).is_zero() {
                    return Some(places);
                }
                power *= 10u32;
            }
            None
        }
        _ => None,
    }
}

/// The right side of `lhs = value` when the left side names a quantity: it has variables and no
/// number (`(p, q)`, `f(x)`, `|AB|`, `x + y`), and the right side has no variables.
fn named_value(e: &Expr) -> Option<&Expr> {
    let Expr::Relation(lhs, Rel::Eq, rhs) = e else { return None };
    let (mut lhs_vars, mut rhs_vars) = (BTreeSet::new(), BTreeSet::new());
    variables(lhs, &mut lhs_vars);
    variables(rhs, &mut rhs_vars);
    (!lhs_vars.is_empty() && rhs_vars.is_empty() && !has_number(lhs)).then_some(&**rhs)
}

/// A two-ended group (`(a, b)`, `[a, b)`) that an inequality may be written as.
fn is_interval_like(e: &Expr) -> bool {
    match e {
        Expr::Group { items, .. } => items.len() == 2,
        Expr::Union(parts) => parts.iter().all(|p| matches!(p, Expr::Group { items, .. } if items.len() == 2)),
        _ => false,
    }
}

/// The interval an inequality in one quantity describes: `a < x \le b` is `(a, b]`, `x \ge a` is
/// `[a, \infty)`, `b > x` is `(-\infty, b)`. The quantity has no number in it; the bounds have no
/// variables.
fn interval_of(e: &Expr) -> Option<Expr> {
    let (quantity, interval) = interval_and_quantity(e)?;
    match quantity {
        Expr::Abs(_) => absolute_value_set(interval),
        _ => Some(interval),
    }
}

/// The set of `z` whose `|z|` lies in `interval`: `1 \le |z| \le 2` is `[-2, -1] \cup [1, 2]`,
/// `|z| < 2` is `(-2, 2)`, `|z| > 1` is `(-\infty, -1) \cup (1, \infty)`. `None` when an end has
/// no real value or the low end is an open 0.
fn absolute_value_set(interval: Expr) -> Option<Expr> {
    let Expr::Group { open, close, items } = interval else { return None };
    let [low, high] = <[Expr; 2]>::try_from(items).ok()?;
    let value = |x: &Expr| {
        let a = approx(x, &Point(BTreeMap::new()))?;
        (a.value.im == 0.0 && !a.value.re.is_nan()).then_some(a.value.re)
    };
    let (low_value, high_value) = (value(&low)?, value(&high)?);
    let (low_closed, high_closed) = (open == '[', close == ']');
    let neg = |x: &Expr| Expr::Neg(Box::new(x.clone()));
    let group = |open: bool, a: Expr, b: Expr, close: bool| Expr::Group {
        open: if open { '[' } else { '(' },
        close: if close { ']' } else { ')' },
        items: vec![a, b],
    };
    if low_value < 0.0 || (low_value == 0.0 && low_closed) {
        // Every `z` with `|z|` below the high end.
        if high_value.is_infinite() {
            return None; // all reals: not an interval we compare
        }
        return Some(group(high_closed, neg(&high), high.clone(), high_closed));
    }
    if low_value == 0.0 {
        return None;
    }
    Some(Expr::Union(vec![
        group(high_closed, neg(&high), neg(&low), low_closed),
        group(low_closed, low, high, high_closed),
    ]))
}

/// [`interval_of`] before reading `|z|`: the quantity and the interval it lies in.
fn interval_and_quantity(e: &Expr) -> Option<(&Expr, Expr)> {
    let quantity = |x: &Expr| {
        let mut vars = BTreeSet::new();
        variables(x, &mut vars);
        !vars.is_empty() && !has_number(x)
    };
    let bound = |x: &Expr| {
        let mut vars = BTreeSet::new();
        variables(x, &mut vars);
        vars.is_empty() && is_scalar(x)
    };
    let infinity = || Expr::Const(Const::Infinity);
    let interval = |low: Expr, low_closed: bool, high: Expr, high_closed: bool| Expr::Group {
        open: if low_closed { '[' } else { '(' },
        close: if high_closed { ']' } else { ')' },
        items: vec![low, high],
    };
    let Expr::Relation(left, rel, right) = e else { return None };
    // Chains: `a < x < b`, `b > x > a`.
    if let Expr::Relation(low, first, middle) = &**left {
        if !(quantity(middle) && bound(low) && bound(right)) {
            return None;
        }
        let found = match (first, rel) {
            (Rel::Lt | Rel::Le, Rel::Lt | Rel::Le) => {
                interval((**low).clone(), *first == Rel::Le, (**right).clone(), *rel == Rel::Le)
            }
            (Rel::Gt | Rel::Ge, Rel::Gt | Rel::Ge) => {
                interval((**right).clone(), *rel == Rel::Ge, (**low).clone(), *first == Rel::Ge)
            }
            _ => return None,
        };
        return Some((&**middle, found));
    }
    // One side: `x < b`, `b > x`, ...
    let (rel, end, q) = if quantity(left) && bound(right) {
        (*rel, (**right).clone(), &**left)
    } else if quantity(right) && bound(left) {
        (flip(*rel), (**left).clone(), &**right)
    } else {
        return None;
    };
    let found = match rel {
        Rel::Lt | Rel::Le => interval(Expr::Neg(Box::new(infinity())), false, end, rel == Rel::Le),
        Rel::Gt | Rel::Ge => interval(end, rel == Rel::Ge, infinity(), false),
        _ => return None,
    };
    Some((q, found))
}

/// `p = 5, q = 2`: two or more assignments to distinct variables, in the order written.
fn assignments(e: &Expr) -> Option<Vec<(&str, &Expr)>> {
    let Expr::List(items) = e else { return None };
    if items.len() < 2 || items.len() > MAX_ITEMS {
        return None;
    }
    let mut out: Vec<(&str, &Expr)> = Vec::with_capacity(items.len());
    for item in items {
        let Expr::Relation(lhs, Rel::Eq, rhs) = item else { return None };
        let Expr::Var(name) = &**lhs else { return None };
        if out.iter().any(|(n, _)| n == name) {
            return None;
        }
        out.push((name.as_str(), &**rhs));
    }
    Some(out)
}

/// The values of assignments as a tuple.
fn tuple_of(assignments: &[(&str, &Expr)]) -> Expr {
    Expr::Group { open: '(', close: ')', items: assignments.iter().map(|(_, value)| (*value).clone()).collect() }
}

/// Items of a set-like answer: `{a, b}`, a bare list `a, b`, or a list of `x = a` items.
fn as_collection(e: &Expr) -> Option<Vec<&Expr>> {
    match e {
        Expr::Set(items) | Expr::List(items) => Some(items.iter().map(|x| solved_value(x).unwrap_or(x)).collect()),
        _ => None,
    }
}

/// `a ± b` -> the set {a + b, a - b} (at most [`MAX_PLUS_MINUS`] signs; beyond, left as is).
fn expand_plus_minus(e: &Expr) -> Expr {
    fn count(e: &Expr) -> usize {
        let mut n = 0;
        fn go(e: &Expr, n: &mut usize) {
            if let Expr::PlusMinus(a, b) = e {
                *n += 1;
                go(a, n);
                go(b, n);
            } else {
                match e {
                    Expr::Neg(a) | Expr::Func(_, a) | Expr::Abs(a) | Expr::Factorial(a) => go(a, n),
                    Expr::Add(a, b)
                    | Expr::Sub(a, b)
                    | Expr::Mul(a, b)
                    | Expr::Div(a, b)
                    | Expr::Pow(a, b)
                    | Expr::Log(a, b)
                    | Expr::Root(a, b)
                    | Expr::Binom(a, b) => {
                        go(a, n);
                        go(b, n);
                    }
                    _ => {}
                }
            }
        }
        go(e, &mut n);
        n
    }
    fn choose(e: &Expr, signs: &mut impl Iterator<Item = bool>) -> Expr {
        let b = |x: &Expr, s: &mut dyn FnMut(&Expr) -> Expr| Box::new(s(x));
        let mut rec = |x: &Expr| choose(x, signs);
        match e {
            Expr::PlusMinus(a, c) => {
                let l = rec(a);
                let r = rec(c);
                if signs.next().unwrap_or(true) {
                    Expr::Add(Box::new(l), Box::new(r))
                } else {
                    Expr::Sub(Box::new(l), Box::new(r))
                }
            }
            Expr::Neg(a) => Expr::Neg(b(a, &mut rec)),
            Expr::Func(f, a) => Expr::Func(*f, b(a, &mut rec)),
            Expr::Abs(a) => Expr::Abs(b(a, &mut rec)),
            Expr::Factorial(a) => Expr::Factorial(b(a, &mut rec)),
            Expr::Add(x, y) => Expr::Add(b(x, &mut rec), b(y, &mut rec)),
            Expr::Sub(x, y) => Expr::Sub(b(x, &mut rec), b(y, &mut rec)),
            Expr::Mul(x, y) => Expr::Mul(b(x, &mut rec), b(y, &mut rec)),
            Expr::Div(x, y) => Expr::Div(b(x, &mut rec), b(y, &mut rec)),
            Expr::Pow(x, y) => Expr::Pow(b(x, &mut rec), b(y, &mut rec)),
            Expr::Log(x, y) => Expr::Log(b(x, &mut rec), b(y, &mut rec)),
            Expr::Root(x, y) => Expr::Root(b(x, &mut rec), b(y, &mut rec)),
            Expr::Binom(x, y) => Expr::Binom(b(x, &mut rec), b(y, &mut rec)),
            other => other.clone(),
        }
    }
    match e {
        Expr::List(items) => Expr::List(items.iter().map(expand_plus_minus).collect()),
        Expr::Set(items) => Expr::Set(items.iter().map(expand_plus_minus).collect()),
        Expr::Relation(l, r, rhs) if count(rhs) > 0 && count(l) == 0 => {
            // x = 1 ± √2 -> {x = 1 + √2, x = 1 - √2}
            match expand_plus_minus(rhs) {
                Expr::Set(items) => {
                    Expr::List(items.into_iter().map(|x| Expr::Relation(l.clone(), *r, Box::new(x))).collect())
                }
                other => Expr::Relation(l.clone(), *r, Box::new(other)),
            }
        }
        _ => {
            let n = count(e);
            if n == 0 || n > MAX_PLUS_MINUS {
                return e.clone();
            }
            let items = (0..1u32 << n)
                .map(|mask| {
                    let mut bits = (0..n).map(move |k| mask & (1 << k) == 0);
                    choose(e, &mut bits)
                })
                .collect();
            Expr::Set(items)
        }
    }
}
