//! fp32 loops for the CPU work that runs outside libtorch: the norms, rotations and attention of
//! the fused decode step (`decoder/fused_decode.rs`) and the sampler's softmax.
//!
//! The loops are written so that the compiler vectorises them (independent lanes, no branches,
//! sums kept in `LANES` separate accumulators), and each public function is compiled twice, for
//! the baseline target and for AVX2 with FMA, choosing at run time: the binary stays portable and
//! still uses 8-lane vectors where the CPU has them. Summation order therefore differs from
//! libtorch's in the last bits, as libtorch's own differs between CPUs.

/// Independent accumulators per sum or maximum: as many lanes as an AVX-512 register, twice an
/// AVX2 one, so the loops neither depend on one register nor leave a vector half used.
const LANES: usize = 16;

/// Defines a function whose body is compiled for the baseline target and for AVX2 + FMA; each
/// call runs the best version this CPU supports. Helpers the body calls should be
/// `#[inline(always)]` so that they are compiled into both versions. The body may read the
/// const `FMA`: whether the version it is compiled into has fused multiply-add instructions (see
/// `multiply_add`). Closures in the body are compiled once, for the baseline: use loops.
macro_rules! multiversioned {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$meta])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn portable<const FMA: bool>($($arg: $ty),*) $(-> $ret)? $body

            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                portable::<true>($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                // SAFETY: this CPU has the features `avx2` was compiled for.
                return unsafe { avx2($($arg),*) };
            }
            // Every aarch64 CPU has FMA; the x86-64 baseline does not.
            portable::<{ cfg!(target_arch = "aarch64") }>($($arg),*)
        }
    };
}
pub(crate) use multiversioned;

/// e^x, branch-free so that loops over it vectorise: x = n ln 2 + r with |r| <= ln 2 / 2 (ln 2 in
/// two parts, Cody and Waite, so that n ln 2 is exact), e^r from Cephes' `expf` polynomial, 2^n
/// put in the exponent bits. Within 2 ulp of the true value; 0 below -87.3 (where 2^n would be
/// subnormal), e^88.37 above 88.37, NaN for NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOW: f32 = -87.336_55;
    const HIGH: f32 = 88.376_26;
    // Adding 1.5 * 2^23 rounds to an integer kept in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const ROUND_BITS: i32 = 0x4B40_0000;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    let clamped = x.max(LOW).min(HIGH);
    let shifted = clamped * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = clamped - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 5.000_000_1e-1;
    let exp_r = p * r * r + r + 1.0;
    let two_to_n = f32::from_bits(((shifted.to_bits() as i32 - ROUND_BITS + 127) << 23) as u32);
    let y = exp_r * two_to_n;
    if x < LOW {
        0.0
    } else if x.is_nan() {
        x
    } else {
        y
    }
}

/// `a * b + c`: in one rounding (`f32::mul_add`) where `FMA` says the CPU has the instruction,
/// else in two (there `mul_add` would be a slow library call).
#[inline(always)]
pub(crate) fn multiply_add<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// The largest element (-inf for an empty slice; NaNs are skipped, as `f32::max` does).
#[inline(always)]
pub(crate) fn max(xs: &[f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (m, &x) in lanes.iter_mut().zip(chunk) {
            *m = if x > *m { x } else { *m };
        }
    }
    for &x in rest {
        lanes[0] = if x > lanes[0] { x } else { lanes[0] };
    }
    // Halves folded onto halves: vector maxima, not a scalar chain (exact in any order).
    let mut half = LANES;
    while half > 1 {
        half /= 2;
        for i in 0..half {
            lanes[i] = if lanes[i + half] > lanes[i] { lanes[i + half] } else { lanes[i] };
        }
    }
    lanes[0]
}

/// The sum of the elements.
#[inline(always)]
pub(crate) fn sum(xs: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (s, &x) in lanes.iter_mut().zip(chunk) {
            *s += x;
        }
    }
    lanes.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// `xs[i] = e^(xs[i] - shift)`; returns their sum.
#[inline(always)]
pub(crate) fn exp_shifted_in_place(xs: &mut [f32], shift: f32) -> f32 {
    for x in xs.iter_mut() {
        *x = exp(*x - shift);
    }
    sum(xs)
}

/// `out[h * width + c] = sum_i coefficients[h][i] * rows[i * stride + c]` for `G` heads that
/// share one kv head: `count` coefficients per head, `count` rows of at least
/// `width = out.len() / G` columns, `stride` apart; out `[G, width]`. Both products of attention
/// are this one: the scores (rows: the kv head's transposed keys, `[head_dim, capacity]`;
/// coefficients: the queries) and the outputs (rows: its values, `[slots, head_dim]`;
/// coefficients: the softmax weights). `LANES` columns at a time, each row read once for all `G`
/// heads, the sums held in registers.
#[inline(always)]
pub(crate) fn head_group_products<const G: usize, const FMA: bool>(
    coefficients: [&[f32]; G],
    rows: &[f32],
    stride: usize,
    out: &mut [f32],
) {
    let width = out.len() / G;
    let count = coefficients[0].len();
    assert!(coefficients.iter().all(|c| c.len() == count), "as many coefficients for every head");
    assert!(width <= stride, "rows of {width} columns at a stride of {stride}");
    assert!(count == 0 || (count - 1) * stride + width <= rows.len(), "{count} rows of {width} columns");
    let mut start = 0;
    while start + LANES <= width {
        let mut sums = [[0.0f32; LANES]; G];
        for (i, row) in rows[start..].chunks(stride).take(count).enumerate() {
            let block: &[f32; LANES] = row[..LANES].try_into().expect("a block");
            for (sum, head) in sums.iter_mut().zip(&coefficients) {
                let a = head[i];
                for (x, &v) in sum.iter_mut().zip(block) {
                    *x = multiply_add::<FMA>(a, v, *x);
                }
            }
        }
        for (h, sum) in sums.iter().enumerate() {
            out[h * width + start..][..LANES].copy_from_slice(sum);
        }
        start += LANES;
    }
    for c in start..width {
        for (h, head) in coefficients.iter().enumerate() {
            out[h * width + c] = head.iter().zip(rows.chunks(stride)).fold(0.0, |total, (a, row)| total + a * row[c]);
        }
    }
}

/// `1 / sqrt(mean(x^2) + eps)`: RMSNorm's factor.
#[inline(always)]
pub(crate) fn inverse_rms(x: &[f32], eps: f32) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let chunks = x.chunks_exact(LANES);
    let rest = chunks.remainder();
    for chunk in chunks {
        for (s, &v) in lanes.iter_mut().zip(chunk) {
            *s += v * v;
        }
    }
    let squares = lanes.iter().sum::<f32>() + rest.iter().map(|v| v * v).sum::<f32>();
    1.0 / (squares / x.len() as f32 + eps).sqrt()
}

/// `out[i] = weight[i] * (x[i] / sqrt(mean(x^2) + eps))`: RMSNorm with transformers' order of
/// operations (normalise, then multiply by the weight). Returns the factor (`inverse_rms`).
#[inline(always)]
pub(crate) fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) -> f32 {
    let inverse_rms = inverse_rms(x, eps);
    for ((o, &v), &w) in out.iter_mut().zip(x).zip(weight) {
        *o = w * (v * inverse_rms);
    }
    inverse_rms
}

/// The gradient of RMSNorm (`rms_norm` of one row `x` with factor `inverse_rms`) given the
/// gradient `dy` of its output: `dx += r w dy - x r^3 / n * sum(w dy x)`, `dweight += dy x r`.
#[inline(always)]
pub(crate) fn rms_norm_backward(
    x: &[f32],
    inverse_rms: f32,
    weight: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    dweight: &mut [f32],
) {
    let r = inverse_rms;
    let mut lanes = [0.0f32; LANES];
    let (chunks, dys, ws) = (x.chunks_exact(LANES), dy.chunks_exact(LANES), weight.chunks_exact(LANES));
    let rest: f32 =
        chunks.remainder().iter().zip(dys.remainder()).zip(ws.remainder()).map(|((x, g), w)| x * g * w).sum();
    for ((x, g), w) in chunks.zip(dys).zip(ws) {
        for (((s, &x), &g), &w) in lanes.iter_mut().zip(x).zip(g).zip(w) {
            *s += x * g * w;
        }
    }
    let c = (lanes.iter().sum::<f32>() + rest) * r * r * r / x.len() as f32;
    for ((((dx, dw), &x), &g), &w) in dx.iter_mut().zip(dweight.iter_mut()).zip(x).zip(dy).zip(weight) {
        *dx += r * w * g - x * c;
        *dw += g * x * r;
    }
}

/// `sum a[i] b[i]`.
#[inline(always)]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; LANES];
    let (ac, bc) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let rest: f32 = ac.remainder().iter().zip(bc.remainder()).map(|(a, b)| a * b).sum();
    for (a, b) in ac.zip(bc) {
        for ((s, &a), &b) in lanes.iter_mut().zip(a).zip(b) {
            *s += a * b;
        }
    }
    lanes.iter().sum::<f32>() + rest
}

multiversioned! {
    /// The sampler's softmax at a temperature: `weights[i] = e^(logits[i] / t - m)` with
    /// `m = max(logits / t)`; returns `(m, sum of weights)`, so that
    /// `log_softmax(logits / t)[i] = logits[i] / t - m - ln(sum)`.
    pub fn softmax_weights(logits: &[f32], temperature: f32, weights: &mut Vec<f32>) -> (f32, f32) {
        weights.clear();
        weights.extend(logits.iter().map(|&l| l / temperature));
        let m = max(weights);
        let total = exp_shifted_in_place(weights, m);
        (m, total)
    }
}

multiversioned! {
    /// Sums of consecutive chunks of `chunk` weights (the last one may be shorter): a draw by
    /// inverse CDF finds its chunk first, then its token within the chunk.
    pub fn chunk_sums(weights: &[f32], chunk: usize, sums: &mut Vec<f32>) {
        sums.clear();
        sums.extend(weights.chunks(chunk).map(sum));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_of_std() {
        let mut worst = 0u32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (got, want) = (exp(x), x.exp());
            worst = worst.max(got.to_bits().abs_diff(want.to_bits()));
            x += 0.000_37;
        }
        assert!(worst <= 2, "exp is {worst} ulp off");
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
    }

    #[test]
    fn softmax_weights_match_the_definition() {
        let logits: Vec<f32> = (0..403).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let mut weights = Vec::new();
        let (m, total) = softmax_weights(&logits, 0.7, &mut weights);
        let scaled: Vec<f32> = logits.iter().map(|&l| l / 0.7).collect();
        assert_eq!(m, scaled.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        // e^(x - m) of the same fp32 differences, in f64.
        let want: Vec<f64> = scaled.iter().map(|&s| f64::from(s - m).exp()).collect();
        let want_total: f64 = want.iter().sum();
        assert!((f64::from(total) - want_total).abs() < 1e-6 * want_total);
        for (got, want) in weights.iter().zip(&want) {
            assert!((f64::from(*got) - want).abs() <= 2.5e-7 * want, "{got} vs {want}");
        }
    }

    #[test]
    fn max_sum_and_chunk_sums() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0).abs()).collect();
        assert_eq!(max(&xs), 18.0);
        assert_eq!(max(&[]), f32::NEG_INFINITY);
        assert_eq!(sum(&xs), xs.iter().sum::<f32>());
        let mut sums = Vec::new();
        chunk_sums(&xs, 16, &mut sums);
        let want: Vec<f32> = xs.chunks(16).map(|c| c.iter().sum()).collect();
        assert_eq!(sums, want);
    }

    /// Both versions: fused multiply-adds and separate ones.
    #[test]
    fn scores_and_weighted_values_of_head_groups() {
        head_group_products_by_hand::<true>();
        head_group_products_by_hand::<false>();
    }

    fn head_group_products_by_hand<const FMA: bool>() {
        // Two heads of dimension 20 (a block of 16 and 4 left over), 32 slots in a stride of 48.
        let (d, n, stride) = (20, 32, 48);
        let value = |i: usize| ((i * 7 % 11) as f32 - 5.0) / 4.0;
        let queries: Vec<f32> = (0..d * 2).map(|i| value(i + 3)).collect();
        let keys: Vec<f32> = (0..d * stride).map(value).collect();
        let mut got = vec![0.0; 2 * n];
        head_group_products::<2, FMA>([&queries[..d], &queries[d..]], &keys, stride, &mut got);
        for h in 0..2 {
            for s in 0..n {
                let want: f32 = (0..d).map(|j| queries[h * d + j] * keys[j * stride + s]).sum();
                assert!((got[h * n + s] - want).abs() < 1e-5, "score {h} {s}");
            }
        }
        let weights: Vec<f32> = (0..n * 2).map(|i| value(i + 5)).collect();
        let values: Vec<f32> = (0..n * d).map(|i| value(i + 1)).collect();
        let mut got = vec![0.0; 2 * d];
        head_group_products::<2, FMA>([&weights[..n], &weights[n..]], &values, d, &mut got);
        for h in 0..2 {
            for c in 0..d {
                let want: f32 = (0..n).map(|s| weights[h * n + s] * values[s * d + c]).sum();
                assert!((got[h * d + c] - want).abs() < 1e-5, "output {h} {c}");
            }
        }
    }

    #[test]
    fn rms_norm_matches_the_formula() {
        let x: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
        let w: Vec<f32> = (0..40).map(|i| 1.0 + i as f32 / 40.0).collect();
        let mut out = vec![0.0; 40];
        rms_norm(&x, &w, 1e-6, &mut out);
        let rms = (x.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / 40.0 + 1e-6).sqrt();
        for i in 0..40 {
            let want = f64::from(w[i]) * f64::from(x[i]) / rms;
            assert!((f64::from(out[i]) - want).abs() < 1e-6, "{i}");
        }
    }
}
