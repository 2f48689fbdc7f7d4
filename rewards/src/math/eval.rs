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

/// Whether a number literal appears anywhere.
pub fn has_number(e: &Expr) -> bool {
    let mut found = false;
    walk(e, &mut |x| found |= matches!(x, Expr::Num { .. }));
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

/// Rounding error one floating-point operation may add, relative to its result (complex
/// operations lose a few ulps).
const ROUNDING: f64 = 4.0 * f64::EPSILON;

/// A floating-point value with a bound on the rounding error it has accumulated.
///
/// The bound is what lets a comparison tell a value that is zero up to rounding (`\sin\pi`,
/// `x - x`) from one that is merely small (`e^{-40}`). A result that under- or overflowed (a
/// product of nonzero numbers that came out 0, a power of finite numbers that came out infinite)
/// is NaN: its size is unknown, so it equals nothing.
#[derive(Debug, Clone, Copy)]
pub struct Approx {
    pub value: Complex64,
    pub error: f64,
}

impl Approx {
    fn exact(value: Complex64) -> Approx {
        Approx { value, error: 0.0 }
    }

    fn invalid() -> Approx {
        Approx { value: Complex64::new(f64::NAN, 0.0), error: 0.0 }
    }

    /// The result of one operation: the propagated error plus this operation's rounding.
    fn rounded(value: Complex64, propagated: f64) -> Approx {
        let error = propagated + ROUNDING * value.norm();
        if value.re.is_nan() || value.im.is_nan() || error.is_nan() {
            return Approx::invalid();
        }
        if error.is_infinite() && value.re.is_finite() && value.im.is_finite() {
            return Approx::invalid(); // a finite value known to no digit
        }
        Approx { value, error }
    }

    pub fn is_finite(&self) -> bool {
        self.value.re.is_finite() && self.value.im.is_finite()
    }

    pub fn is_nan(&self) -> bool {
        self.value.re.is_nan() || self.value.im.is_nan()
    }

    /// Zero up to the rounding error it carries (an exact 0 included).
    pub fn is_zero(&self) -> bool {
        self.is_finite() && self.value.norm() <= self.error
    }

    fn norm(&self) -> f64 {
        self.value.norm()
    }
}

/// `result` of an operation on finite, nonzero operands: 0 there is an underflow and ±inf an
/// overflow, never the true value.
fn checked(result: Approx, operands: &[&Approx], nonzero_in_nonzero_out: bool) -> Approx {
    let all_finite = operands.iter().all(|a| a.is_finite());
    if all_finite && !result.is_finite() && !result.is_nan() {
        return Approx::invalid();
    }
    if nonzero_in_nonzero_out
        && all_finite
        && operands.iter().all(|a| a.value != Complex64::zero())
        && result.value == Complex64::zero()
    {
        return Approx::invalid();
    }
    result
}

/// The value as a complex number (`None` when a variable is unbound or a tuple appears).
pub fn numeric(e: &Expr, env: &dyn Env) -> Option<Complex64> {
    approx(e, env).map(|a| a.value)
}

/// The value with its rounding-error bound (`None` when a variable is unbound or a tuple
/// appears).
pub fn approx(e: &Expr, env: &dyn Env) -> Option<Approx> {
    let real = |v: f64| Complex64::new(v, 0.0);
    Some(match e {
        Expr::Num { value, .. } => {
            let v = real(to_f64(value));
            let representable = value.is_integer() && value.numer().bits() <= f64::MANTISSA_DIGITS as u64;
            if value.is_zero() || representable {
                Approx::exact(v)
            } else if v.re == 0.0 || v.re.is_infinite() {
                Approx::invalid() // `10^{-400}` written out, or a 400-digit literal
            } else {
                Approx::rounded(v, 0.0)
            }
        }
        Expr::Const(Const::Pi) => Approx::rounded(real(std::f64::consts::PI), 0.0),
        Expr::Const(Const::E) => Approx::rounded(real(std::f64::consts::E), 0.0),
        Expr::Const(Const::I) => Approx::exact(Complex64::new(0.0, 1.0)),
        Expr::Const(Const::Infinity) => Approx::exact(real(f64::INFINITY)),
        Expr::Const(Const::EmptySet) => return None,
        Expr::Var(name) => Approx::exact(env.get(name)?),
        Expr::Neg(a) => {
            let a = approx(a, env)?;
            Approx { value: -a.value, error: a.error }
        }
        Expr::Add(a, b) | Expr::Sub(a, b) => {
            let (x, y) = (approx(a, env)?, approx(b, env)?);
            let value = if matches!(e, Expr::Add(..)) { x.value + y.value } else { x.value - y.value };
            checked(Approx::rounded(value, x.error + y.error), &[&x, &y], false)
        }
        Expr::Mul(a, b) => {
            let (x, y) = (approx(a, env)?, approx(b, env)?);
            let propagated = x.norm() * y.error + y.norm() * x.error + x.error * y.error;
            checked(Approx::rounded(x.value * y.value, propagated), &[&x, &y], true)
        }
        Expr::Div(a, b) => {
            let (x, y) = (approx(a, env)?, approx(b, env)?);
            if y.value == Complex64::zero() {
                return Some(Approx::invalid());
            }
            let q = x.value / y.value;
            let propagated =
                if y.error >= y.norm() { f64::INFINITY } else { (x.error + q.norm() * y.error) / (y.norm() - y.error) };
            checked(Approx::rounded(q, propagated), &[&x, &y], x.value != Complex64::zero())
        }
        Expr::Pow(a, b) => {
            let (x, y) = (approx(a, env)?, approx(b, env)?);
            let exact_exponent = exact(b);
            let value = power(x.value, y.value, exact_exponent.as_ref());
            // d(x^y) = x^y (y/x dx + ln x dy)
            let propagated = if x.error == 0.0 && y.error == 0.0 {
                0.0
            } else if x.value == Complex64::zero() {
                f64::INFINITY
            } else {
                value.norm() * ((y.value / x.value).norm() * x.error + x.value.ln().norm() * y.error)
            };
            let result = Approx::rounded(value, propagated);
            checked(result, &[&x, &y], x.value != Complex64::zero())
        }
        Expr::Func(f, a) => {
            let x = approx(a, env)?;
            let apply = |x: Complex64| -> Option<Complex64> {
                Some(match f {
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
                })
            };
            let value = apply(x.value)?;
            // The input's error, carried through f by evaluating at both ends of its range.
            let propagated = if x.error == 0.0 {
                0.0
            } else {
                let step = Complex64::new(x.error, 0.0);
                let up = (apply(x.value + step)? - value).norm();
                let down = (apply(x.value - step)? - value).norm();
                up.max(down)
            };
            checked(Approx::rounded(value, propagated), &[&x], *f == Func::Exp)
        }
        Expr::Log(base, a) => {
            let quotient =
                Expr::Div(Box::new(Expr::Func(Func::Ln, a.clone())), Box::new(Expr::Func(Func::Ln, base.clone())));
            approx(&quotient, env)?
        }
        Expr::Root(index, a) => {
            let (n, x) = (approx(index, env)?, approx(a, env)?);
            let odd_integer = exact(index).is_some_and(|k| k.is_integer() && k.to_integer().is_odd());
            let value = if odd_integer && x.value.im == 0.0 && x.value.re < 0.0 {
                real(-(-x.value.re).powf(1.0 / n.value.re))
            } else {
                x.value.powc(n.value.inv())
            };
            // d(x^{1/n}) = x^{1/n} / (n x) dx; the index is an exact integer in practice.
            let propagated = if x.error == 0.0 {
                0.0
            } else if x.value == Complex64::zero() {
                f64::INFINITY
            } else {
                value.norm() * x.error / (n.value * x.value).norm()
            };
            checked(Approx::rounded(value, propagated + n.error), &[&n, &x], x.value != Complex64::zero())
        }
        Expr::Abs(a) => {
            let x = approx(a, env)?;
            Approx { value: real(x.norm()), error: x.error }
        }
        Expr::Factorial(a) => {
            let x = approx(a, env)?;
            if x.value.im != 0.0 || x.value.re < 0.0 || x.value.re.fract() != 0.0 || x.value.re > 170.0 {
                return Some(Approx::invalid());
            }
            Approx::rounded(real((2..=x.value.re as u64).map(|k| k as f64).product()), 0.0)
        }
        Expr::Binom(..) => Approx::rounded(real(to_f64(&exact(e)?)), 0.0),
        _ => return None,
    })
}

/// `base^exponent`, with real odd roots of negative numbers (`(-8)^{1/3} = -2`).
fn power(base: Complex64, exponent: Complex64, exact_exponent: Option<&BigRational>) -> Complex64 {
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
