//! Evaluation of [`Expr`]: exact rationals where the expression is rational, complex floating
//! point otherwise (radicals, π, e, functions, variables bound to sample points).

use std::collections::BTreeSet;

use num_bigint::BigInt;
use num_complex::Complex64;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

use super::lex::{Const, Func};
use super::parse::Expr;

/// Largest integer exponent evaluated exactly.
const MAX_EXACT_EXPONENT: u32 = 4096;
/// Largest result (in bits) of an exact power or factorial.
const MAX_EXACT_BITS: u64 = 20_000;

/// Whether a decimal literal (`0.5`) appears anywhere: comparisons then allow 1e-6.
pub fn has_float(e: &Expr) -> bool {
    let mut found = false;
    walk(e, &mut |x| {
        if matches!(x, Expr::Num { float: true, .. }) {
            found = true;
        }
    });
    found
}

/// The free variables.
pub fn variables(e: &Expr, out: &mut BTreeSet<String>) {
    walk(e, &mut |x| {
        if let Expr::Var(name) = x {
            out.insert(name.clone());
        }
    });
}

/// Whether `e` is arithmetic only (no tuples, sets, relations, matrices).
pub fn is_scalar(e: &Expr) -> bool {
    let mut ok = true;
    walk(e, &mut |x| {
        if matches!(
            x,
            Expr::Group { .. } | Expr::Set(_) | Expr::List(_) | Expr::Union(_) | Expr::Relation(..) | Expr::Matrix(_)
        ) || matches!(x, Expr::Const(Const::EmptySet))
        {
            ok = false;
        }
    });
    ok
}

fn walk(e: &Expr, f: &mut impl FnMut(&Expr)) {
    f(e);
    match e {
        Expr::Num { .. } | Expr::Const(_) | Expr::Var(_) => {}
        Expr::Neg(a) | Expr::Func(_, a) | Expr::Abs(a) | Expr::Factorial(a) => walk(a, f),
        Expr::Add(a, b)
        | Expr::Sub(a, b)
        | Expr::PlusMinus(a, b)
        | Expr::Mul(a, b)
        | Expr::Div(a, b)
        | Expr::Pow(a, b)
        | Expr::Log(a, b)
        | Expr::Root(a, b)
        | Expr::Binom(a, b)
        | Expr::Relation(a, _, b) => {
            walk(a, f);
            walk(b, f);
        }
        Expr::Group { items, .. } | Expr::Set(items) | Expr::List(items) | Expr::Union(items) => {
            items.iter().for_each(|x| walk(x, f))
        }
        Expr::Matrix(rows) => rows.iter().flatten().for_each(|x| walk(x, f)),
    }
}

/// The exact value, when `e` is rational arithmetic on literals (`None` otherwise, or on
/// division by zero, or when a power or factorial would be too large).
pub fn exact(e: &Expr) -> Option<BigRational> {
    Some(match e {
        Expr::Num { value, .. } => value.clone(),
        Expr::Neg(a) => -exact(a)?,
        Expr::Add(a, b) => exact(a)? + exact(b)?,
        Expr::Sub(a, b) => exact(a)? - exact(b)?,
        Expr::Mul(a, b) => exact(a)? * exact(b)?,
        Expr::Div(a, b) => {
            let d = exact(b)?;
            if d.is_zero() {
                return None;
            }
            exact(a)? / d
        }
        Expr::Pow(a, b) => {
            let base = exact(a)?;
            let exponent = exact(b)?;
            if !exponent.is_integer() {
                return None;
            }
            let n = exponent.to_integer().abs().to_u32()?;
            if n > MAX_EXACT_EXPONENT {
                return None;
            }
            let bits = base.numer().bits().max(base.denom().bits());
            if bits.saturating_mul(n as u64) > MAX_EXACT_BITS {
                return None;
            }
            if base.is_zero() && exponent.is_negative() {
                return None;
            }
            let p = num_traits::pow(base, n as usize);
            if exponent.is_negative() {
                p.recip()
            } else {
                p
            }
        }
        Expr::Abs(a) => exact(a)?.abs(),
        Expr::Factorial(a) => {
            let v = exact(a)?;
            if !v.is_integer() || v.is_negative() {
                return None;
            }
            let n = v.to_integer().to_u32()?;
            if n > 2000 {
                return None;
            }
            let mut acc = BigInt::one();
            for k in 2..=n {
                acc *= k;
            }
            BigRational::from_integer(acc)
        }
        Expr::Binom(a, b) => {
            let n = exact(a)?;
            let k = exact(b)?;
            if !n.is_integer() || !k.is_integer() {
                return None;
            }
            let n = n.to_integer().to_i64()?;
            let k = k.to_integer().to_i64()?;
            if !(0..=100_000).contains(&n) {
                return None;
            }
            if k < 0 || k > n {
                return Some(BigRational::zero());
            }
            let k = k.min(n - k);
            if k > 2000 {
                return None;
            }
            let mut acc = BigInt::one();
            for j in 0..k {
                acc = acc * BigInt::from(n - j) / BigInt::from(j + 1);
            }
            BigRational::from_integer(acc)
        }
        Expr::Func(Func::Sqrt, a) => {
            // Perfect squares stay exact: \sqrt{4} = 2, \sqrt{9/4} = 3/2.
            let v = exact(a)?;
            if v.is_negative() {
                return None;
            }
            let n = v.numer().sqrt();
            let d = v.denom().sqrt();
            if &n * &n == *v.numer() && &d * &d == *v.denom() {
                BigRational::new(n, d)
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// Variable bindings for numeric evaluation.
pub trait Env {
    fn get(&self, name: &str) -> Option<Complex64>;
}

/// The value as a complex number (`None` when a variable is unbound or a tuple appears).
pub fn numeric(e: &Expr, env: &dyn Env) -> Option<Complex64> {
    Some(match e {
        Expr::Num { value, .. } => Complex64::new(to_f64(value), 0.0),
        Expr::Const(Const::Pi) => Complex64::new(std::f64::consts::PI, 0.0),
        Expr::Const(Const::E) => Complex64::new(std::f64::consts::E, 0.0),
        Expr::Const(Const::I) => Complex64::new(0.0, 1.0),
        Expr::Const(Const::Infinity) => Complex64::new(f64::INFINITY, 0.0),
        Expr::Const(Const::EmptySet) => return None,
        Expr::Var(name) => env.get(name)?,
        Expr::Neg(a) => -numeric(a, env)?,
        Expr::Add(a, b) => numeric(a, env)? + numeric(b, env)?,
        Expr::Sub(a, b) => numeric(a, env)? - numeric(b, env)?,
        Expr::Mul(a, b) => numeric(a, env)? * numeric(b, env)?,
        Expr::Div(a, b) => {
            let d = numeric(b, env)?;
            if d == Complex64::zero() {
                return Some(Complex64::new(f64::NAN, 0.0));
            }
            numeric(a, env)? / d
        }
        Expr::Pow(a, b) => power(numeric(a, env)?, numeric(b, env)?, exact(b)),
        Expr::Func(f, a) => {
            let x = numeric(a, env)?;
            match f {
                Func::Sin => x.sin(),
                Func::Cos => x.cos(),
                Func::Tan => x.tan(),
                Func::Cot => x.tan().inv(),
                Func::Sec => x.cos().inv(),
                Func::Csc => x.sin().inv(),
                Func::Asin => x.asin(),
                Func::Acos => x.acos(),
                Func::Atan => x.atan(),
                Func::Sinh => x.sinh(),
                Func::Cosh => x.cosh(),
                Func::Tanh => x.tanh(),
                Func::Ln | Func::Log => x.ln(),
                Func::Exp => x.exp(),
                Func::Sqrt => x.sqrt(),
                Func::Frac | Func::Binom => return None,
            }
        }
        Expr::Log(base, a) => numeric(a, env)?.ln() / numeric(base, env)?.ln(),
        Expr::Root(index, a) => {
            let n = numeric(index, env)?;
            let x = numeric(a, env)?;
            let odd_integer = exact(index).is_some_and(|k| k.is_integer() && k.to_integer().is_odd());
            if odd_integer && x.im == 0.0 && x.re < 0.0 {
                Complex64::new(-(-x.re).powf(1.0 / n.re), 0.0)
            } else {
                x.powc(n.inv())
            }
        }
        Expr::Abs(a) => Complex64::new(numeric(a, env)?.norm(), 0.0),
        Expr::Factorial(a) => {
            let x = numeric(a, env)?;
            if x.im != 0.0 || x.re < 0.0 || x.re.fract() != 0.0 || x.re > 170.0 {
                return Some(Complex64::new(f64::NAN, 0.0));
            }
            Complex64::new((2..=x.re as u64).map(|k| k as f64).product(), 0.0)
        }
        Expr::Binom(..) => Complex64::new(to_f64(&exact(e)?), 0.0),
        _ => return None,
    })
}

/// `base^exponent`, with real odd roots of negative numbers (`(-8)^{1/3} = -2`).
fn power(base: Complex64, exponent: Complex64, exact_exponent: Option<BigRational>) -> Complex64 {
    if exponent.im == 0.0 && base.im == 0.0 {
        if let Some(q) = exact_exponent {
            if q.is_integer() {
                if let Some(n) = q.to_integer().to_i32() {
                    return base.powi(n);
                }
            } else if base.re < 0.0 && q.denom().is_odd() {
                let magnitude = (-base.re).powf(exponent.re);
                let sign = if q.numer().is_odd() { -1.0 } else { 1.0 };
                return Complex64::new(sign * magnitude, 0.0);
            }
        }
        if base.re >= 0.0 {
            return Complex64::new(base.re.powf(exponent.re), 0.0);
        }
    }
    if base == Complex64::zero() {
        return if exponent.re > 0.0 { Complex64::zero() } else { Complex64::new(f64::NAN, 0.0) };
    }
    base.powc(exponent)
}

/// A rational as the nearest f64 (±inf when out of range).
pub fn to_f64(q: &BigRational) -> f64 {
    if let Some(v) = q.to_f64() {
        return v;
    }
    // Very large numerator/denominator: scale down by bit lengths.
    let shift = q.numer().bits() as i64 - q.denom().bits() as i64;
    if shift > 1100 {
        return if q.is_negative() { f64::NEG_INFINITY } else { f64::INFINITY };
    }
    if shift < -1100 {
        return 0.0;
    }
    f64::NAN
}
