//! MKL's GEMM entry points, reached in the libtorch library that embeds MKL: the packed GEMM
//! (`cblas_sgemm_pack` and `cblas_sgemm_compute`) for the fused decode step's products with the
//! weights, and plain `sgemm_` ([`sgemm`]) for the small products of the fused training
//! pass's attention, where a libtorch call would cost more than the product.
//!
//! A plain `sgemm` of 64 rows against a weight first re-packs the whole weight into MKL's blocked
//! layout, every call: about a fifth of the 24.5M bench model's decode step. Packing each weight
//! once (again only when it changes: the optimizer's update moves its version counter) and then
//! computing against the packed copy made those products 23-36% faster (64 x 512 against
//! 512 x 768 ... 512 x 3072), with results identical to libtorch's `linear` for two rows or more
//! (the same kernels). The cost is a second copy of the layer weights in MKL's layout, which is
//! why models of more than 2 GiB of weights do without (`CausalLM::packs_weights`).
//!
//! Where libtorch has no MKL (ARM, macOS), `Packed::new` returns `None` and the caller uses
//! `linear`; `sgemm` runs plain loops.

use std::ffi::{c_int, c_void};
use std::mem::MaybeUninit;
use std::sync::OnceLock;

const ROW_MAJOR: c_int = 101;
const NO_TRANS: c_int = 111;
const TRANS: c_int = 112;
const PACKED: c_int = 151;
const B_MATRIX: c_int = 162;

struct Mkl {
    /// `size_t cblas_sgemm_pack_get_size(identifier, m, n, k)`.
    pack_get_size: unsafe extern "C" fn(c_int, c_int, c_int, c_int) -> usize,
    /// `cblas_sgemm_pack(layout, identifier, trans, m, n, k, alpha, src, ld, dest)`.
    pack: unsafe extern "C" fn(c_int, c_int, c_int, c_int, c_int, c_int, f32, *const f32, c_int, *mut f32),
    /// `cblas_sgemm_compute(layout, transa, transb, m, n, k, a, lda, b, ldb, beta, c, ldc)`.
    compute: unsafe extern "C" fn(
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        c_int,
        *const f32,
        c_int,
        *const f32,
        c_int,
        f32,
        *mut f32,
        c_int,
    ),
}

fn mkl() -> Option<&'static Mkl> {
    static MKL: OnceLock<Option<Mkl>> = OnceLock::new();
    MKL.get_or_init(|| {
        #[cfg(unix)]
        {
            let symbol = |name: &std::ffi::CStr| {
                // SAFETY: a lookup of a NUL-terminated name among the loaded libraries.
                let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
                (!symbol.is_null()).then_some(symbol)
            };
            let (get_size, pack, compute) =
                (symbol(c"cblas_sgemm_pack_get_size")?, symbol(c"cblas_sgemm_pack")?, symbol(c"cblas_sgemm_compute")?);
            // SAFETY: these are MKL's CBLAS entry points, of the types above (LP64: MKL_INT is
            // a C int, as in libtorch's MKL).
            unsafe {
                Some(Mkl {
                    pack_get_size: std::mem::transmute::<*mut c_void, _>(get_size),
                    pack: std::mem::transmute::<*mut c_void, _>(pack),
                    compute: std::mem::transmute::<*mut c_void, _>(compute),
                })
            }
        }
        #[cfg(not(unix))]
        None
    })
    .as_ref()
}

/// BLAS's `sgemm_(transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)`, every
/// argument by reference, column-major: libtorch's MKL exports this one, not `cblas_sgemm`.
type Sgemm = unsafe extern "C" fn(
    *const u8,
    *const u8,
    *const c_int,
    *const c_int,
    *const c_int,
    *const f32,
    *const f32,
    *const c_int,
    *const f32,
    *const c_int,
    *const f32,
    *mut f32,
    *const c_int,
);

fn mkl_sgemm() -> Option<Sgemm> {
    static SGEMM: OnceLock<Option<Sgemm>> = OnceLock::new();
    *SGEMM.get_or_init(|| {
        // Only MKL's: the packed entry points tell that the library is MKL.
        mkl()?;
        #[cfg(unix)]
        {
            // SAFETY: a lookup of a NUL-terminated name among the loaded libraries.
            let symbol = unsafe { libc::dlsym(libc::RTLD_DEFAULT, c"sgemm_".as_ptr()) };
            // SAFETY: BLAS's `sgemm_`, of the type above (LP64).
            (!symbol.is_null()).then(|| unsafe { std::mem::transmute::<*mut c_void, Sgemm>(symbol) })
        }
        #[cfg(not(unix))]
        None
    })
}

/// An operand of [`sgemm`]: row-major `rows x cols` elements at a leading dimension, used as
/// stored or transposed.
#[derive(Clone, Copy)]
pub(crate) struct Operand<'a> {
    pub data: &'a [f32],
    pub leading: usize,
    pub transposed: bool,
}

impl<'a> Operand<'a> {
    pub(crate) fn plain(data: &'a [f32], leading: usize) -> Self {
        Self { data, leading, transposed: false }
    }

    pub(crate) fn transposed(data: &'a [f32], leading: usize) -> Self {
        Self { data, leading, transposed: true }
    }

    /// Element (i, j) of the operand as used.
    fn at(&self, i: usize, j: usize) -> f32 {
        if self.transposed {
            self.data[j * self.leading + i]
        } else {
            self.data[i * self.leading + j]
        }
    }

    /// Whether `rows x cols` (as used) fit in the data.
    fn holds(&self, rows: usize, cols: usize) -> bool {
        let (r, c) = if self.transposed { (cols, rows) } else { (rows, cols) };
        r == 0 || c == 0 || (c <= self.leading && (r - 1) * self.leading + c <= self.data.len())
    }
}

/// `c = alpha a b + beta c` for `a` `m x k` and `b` `k x n` (as used), `c` `m x n` row-major at
/// leading dimension `ldc`: MKL's `sgemm_` where libtorch has MKL, plain loops elsewhere.
#[allow(clippy::too_many_arguments)]
pub(crate) fn sgemm(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(a.holds(m, k) && b.holds(k, n), "sgemm operands too small for {m} x {k} x {n}");
    assert!(m == 0 || n == 0 || (n <= ldc && (m - 1) * ldc + n <= c.len()), "sgemm output too small");
    if m == 0 || n == 0 {
        return;
    }
    if let Some(sgemm) = mkl_sgemm() {
        // Row-major C = A B is column-major C^T = B^T A^T: the operands swap.
        let trans = |o: &Operand<'_>| if o.transposed { b'T' } else { b'N' };
        let (ta, tb) = (trans(&b), trans(&a));
        let (m_, n_, k_) = (n as c_int, m as c_int, k as c_int);
        let (lda, ldb, ldc) = (b.leading.max(1) as c_int, a.leading.max(1) as c_int, ldc.max(1) as c_int);
        // SAFETY: the operands and the output hold the shapes BLAS reads and writes (checked
        // above), leading dimensions of at least 1; every argument outlives the call.
        unsafe {
            sgemm(
                &ta,
                &tb,
                &m_,
                &n_,
                &k_,
                &alpha,
                b.data.as_ptr(),
                &lda,
                a.data.as_ptr(),
                &ldb,
                &beta,
                c.as_mut_ptr(),
                &ldc,
            )
        };
        return;
    }
    sgemm_loops(m, n, k, alpha, a, b, beta, c, ldc);
}

/// `sgemm` without BLAS.
#[allow(clippy::too_many_arguments)]
fn sgemm_loops(
    m: usize,
    n: usize,
    k: usize,
    alpha: f32,
    a: Operand<'_>,
    b: Operand<'_>,
    beta: f32,
    c: &mut [f32],
    ldc: usize,
) {
    for i in 0..m {
        for j in 0..n {
            let product: f32 = (0..k).map(|l| a.at(i, l) * b.at(l, j)).sum();
            let c = &mut c[i * ldc + j];
            *c = alpha * product + if beta == 0.0 { 0.0 } else { beta * *c };
        }
    }
}

/// A weight `[n, k]` (row-major, as a linear layer stores it) packed as the `B = W^T` operand of
/// `x @ W^T`.
pub(crate) struct Packed {
    /// MKL's buffer, 64-byte aligned at `offset` (MKL's packed data must not move: a `Vec`'s
    /// heap buffer does not while it is not resized). Left uninitialised for MKL to fill: it asks
    /// for about 8 MB whatever the weight's size, and zeroing that on every re-pack (after each
    /// optimizer step) cost the tiny model 0.7-4 ms a weight, a fifth of its generation.
    buffer: Vec<MaybeUninit<f32>>,
    offset: usize,
    n: usize,
    k: usize,
}

impl Packed {
    /// Packs `weight` (`n * k` floats, row-major) for products with `rows`-row inputs (any row
    /// count works with it; `rows` only tunes the layout). `None` without MKL.
    pub(crate) fn new(weight: &[f32], n: usize, k: usize, rows: usize) -> Option<Self> {
        let mkl = mkl()?;
        assert_eq!(weight.len(), n * k);
        let (m, n_, k_) = (rows.max(2) as c_int, n as c_int, k as c_int);
        // SAFETY: MKL's documented size query.
        let bytes = unsafe { (mkl.pack_get_size)(B_MATRIX, m, n_, k_) };
        let mut buffer: Vec<MaybeUninit<f32>> = Vec::with_capacity(bytes.div_ceil(4) + 16);
        // SAFETY: `MaybeUninit` needs no initialisation; only MKL writes and reads these.
        unsafe { buffer.set_len(buffer.capacity()) };
        let offset = buffer.as_ptr().align_offset(64);
        // SAFETY: `weight` holds n x k floats with leading dimension k; the destination has the
        // size MKL asked for, from a 64-byte boundary.
        unsafe {
            (mkl.pack)(
                ROW_MAJOR,
                B_MATRIX,
                TRANS,
                m,
                n_,
                k_,
                1.0,
                weight.as_ptr(),
                k_,
                buffer.as_mut_ptr().add(offset).cast(),
            )
        };
        Some(Self { buffer, offset, n, k })
    }

    /// `out = x @ W^T + bias` for `x` `[rows, k]`, `out` `[rows, n]` (row-major).
    pub(crate) fn multiply(&self, x: &[f32], bias: Option<&[f32]>, out: &mut [f32]) {
        let mkl = mkl().expect("packed without MKL");
        let rows = x.len() / self.k;
        assert!(x.len() == rows * self.k && out.len() == rows * self.n);
        let beta = match bias {
            Some(bias) => {
                for row in out.chunks_exact_mut(self.n) {
                    row.copy_from_slice(bias);
                }
                1.0
            }
            None => 0.0,
        };
        let (m, n, k) = (rows as c_int, self.n as c_int, self.k as c_int);
        // SAFETY: the shapes were checked above; the packed buffer is the one `new` filled.
        unsafe {
            (mkl.compute)(
                ROW_MAJOR,
                NO_TRANS,
                PACKED,
                m,
                n,
                k,
                x.as_ptr(),
                k,
                self.buffer.as_ptr().add(self.offset).cast(),
                k,
                beta,
                out.as_mut_ptr(),
                n,
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use tch::{Kind, Tensor};

    use super::{sgemm, Operand};

    fn operand(data: &[f32], leading: usize, transposed: bool) -> Operand<'_> {
        Operand { data, leading, transposed }
    }

    /// `sgemm` (MKL's, where present, and the plain loops) with each operand plain or
    /// transposed, at leading dimensions wider than the matrices, is libtorch's `mm`.
    #[test]
    fn sgemm_equals_mm() {
        tch::manual_seed(4);
        let (m, n, k) = (13, 9, 21);
        let host = |t: &Tensor| Vec::<f32>::try_from(t.contiguous().reshape([-1])).unwrap();
        for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
            // Stored with 3 spare columns.
            let a = Tensor::randn(if ta { [k, m + 3] } else { [m, k + 3] }, (Kind::Float, tch::Device::Cpu));
            let b = Tensor::randn(if tb { [n, k + 3] } else { [k, n + 3] }, (Kind::Float, tch::Device::Cpu));
            let used = |t: &Tensor, transposed: bool, rows: i64, cols: i64| {
                if transposed {
                    t.narrow(1, 0, rows).tr()
                } else {
                    t.narrow(1, 0, cols)
                }
            };
            let want = host(&used(&a, ta, m, k).mm(&used(&b, tb, k, n)).g_mul_scalar(0.5));
            let (a_data, b_data) = (host(&a), host(&b));
            let a_op = operand(&a_data, a.size()[1] as usize, ta);
            let b_op = operand(&b_data, b.size()[1] as usize, tb);
            for with_blas in [true, false] {
                let mut got = vec![7f32; (m * (n + 2)) as usize];
                let product = if with_blas { sgemm } else { super::sgemm_loops };
                product(m as usize, n as usize, k as usize, 0.5, a_op, b_op, 0.0, &mut got, (n + 2) as usize);
                for i in 0..m as usize {
                    for j in 0..n as usize {
                        let (x, y) = (got[i * (n as usize + 2) + j], want[i * n as usize + j]);
                        assert!((x - y).abs() < 1e-4, "trans ({ta}, {tb}) at ({i}, {j}): {x} against {y}");
                    }
                    assert_eq!(got[i * (n as usize + 2) + n as usize], 7.0, "wrote past n");
                }
            }
        }
    }

    /// The packed product is libtorch's `linear`, with and without a bias, for several row counts.
    #[test]
    fn packed_products_equal_linear() {
        tch::manual_seed(3);
        let (n, k) = (48, 40);
        let weight = Tensor::randn([n, k], (Kind::Float, tch::Device::Cpu));
        let bias = Tensor::randn([n], (Kind::Float, tch::Device::Cpu));
        let host = |t: &Tensor| Vec::<f32>::try_from(t.reshape([-1])).unwrap();
        let Some(packed) = super::Packed::new(&host(&weight), n as usize, k as usize, 64) else {
            eprintln!("no MKL in this libtorch: nothing to check");
            return;
        };
        for rows in [2, 5, 64, 100] {
            let x = Tensor::randn([rows, k], (Kind::Float, tch::Device::Cpu));
            for with_bias in [false, true] {
                let want = host(&x.linear(&weight, with_bias.then_some(&bias)));
                let mut got = vec![0f32; (rows * n) as usize];
                packed.multiply(&host(&x), with_bias.then(|| host(&bias)).as_deref(), &mut got);
                let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
                assert!(diff < 1e-5, "{rows} rows, bias {with_bias}: differs from linear by {diff}");
            }
        }
    }
}
