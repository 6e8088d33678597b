// Batched cyclic Jacobi for small real symmetric matrices: an XLA FFI kernel for the CPU.
//
// Why native: XLA:CPU compiles a pure-JAX Jacobi sweep into 30-45 separate kernels (it
// cannot fuse the rotations' several outputs into one loop over the batch), so the JAX
// solver (eigjax/_small.py) is bound by cache traffic. This kernel keeps a block of L
// matrices in structure-of-arrays form (entry-major, L lanes contiguous) in L1 and applies
// every rotation to all L lanes at once: the lane loops are plain elementwise code that
// the compiler vectorises (-O3 -march=native).
//
// Maths (Golub & Van Loan, "Matrix Computations", 4th ed., 8.5.2): for the pair (p, q),
//   theta = (a_qq - a_pp) / (2 a_pq),  t = sign(theta) / (|theta| + sqrt(theta^2 + 1)),
//   c = 1 / sqrt(t^2 + 1),  s = t c,
// and A <- J^T A J, V <- V J with J the rotation (J_pp = J_qq = c, J_pq = s, J_qp = -s),
// which zeroes a_pq (set exactly afterwards). |theta| > 1/sqrt(eps) uses t = 1 / (2 theta)
// (theta^2 would overflow; the neglected term is below rounding). a_pq = 0 leaves the lane
// untouched (c = 1, s = 0), as does an a_pq below the skip threshold (see SolveRange).
// Sweeps run in cyclic row order until one rotates nothing, at most kMaxSweeps.
//
// Each matrix is first scaled by a power of two to max |a_ij| in [0.5, 1) (exact; no
// overflow or underflow in the rotations for input from 1e-30 to 1e30 and beyond); the
// eigenvalues are scaled back. A matrix with a non-finite entry (in either triangle, also
// the one not read without symmetrize) gives all-NaN output.
// Output: eigenvalues ascending, eigenvectors as columns (row-major (n, n) per matrix).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <thread>
#include <type_traits>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

namespace {

constexpr int kMaxSweeps = 40;

template <typename T>
struct Lanes {
  static constexpr int L = 64 / sizeof(T);  // 16 floats or 8 doubles: 2 AVX2 registers
};

// frexp's exponent of a positive normal x (a subnormal gives the smallest normal's), and
// 2^e for e in the normal range: bit operations on the IEEE format instead of libm calls.
template <typename T>
using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
template <typename T>
constexpr int kMantissa = std::numeric_limits<T>::digits - 1;  // 23 or 52 stored bits
template <typename T>
constexpr int kBias = std::numeric_limits<T>::max_exponent - 1;  // 127 or 1023

template <typename T>
inline int Exponent(T x) {
  Bits<T> u;
  std::memcpy(&u, &x, sizeof(T));
  const int biased = int((u >> kMantissa<T>) & ((Bits<T>(1) << (8 * sizeof(T) - 1 - kMantissa<T>)) - 1));
  return std::max(biased, 1) - (kBias<T> - 1);
}
template <typename T>
inline T Pow2(int e) {
  const Bits<T> u = Bits<T>(e + kBias<T>) << kMantissa<T>;
  T x;
  std::memcpy(&x, &u, sizeof(T));
  return x;
}

// Solve matrices [begin, end) of the batch. NT > 0 fixes n = NT at compile time (the
// index arithmetic folds and the loops over k unroll: 2x faster at n = 3); NT = 0 takes
// the runtime n.
// V = false: eigenvalues only (v_out unused): the rotations skip the eigenvector block.
template <typename T, int NT, bool V>
void SolveRange(const T* x, T* w_out, T* v_out, int64_t n_runtime, int64_t begin, int64_t end, bool symmetrize) {
  constexpr int L = Lanes<T>::L;
  const int64_t n = NT > 0 ? NT : n_runtime;
  const int64_t nn = n * n;
  std::vector<T> a(nn * L), v(nn * L), diag(n * L), raw(nn * L);
  T scale[L], inv_scale[L], fro[L], floor_[L], keep[L];
  const T eps = std::numeric_limits<T>::epsilon();
  const T big_theta = T(1) / std::sqrt(eps);
  auto A = [&](int64_t i, int64_t j) { return &a[(i * n + j) * L]; };
  auto Vm = [&](int64_t i, int64_t j) { return &v[(i * n + j) * L]; };

  for (int64_t b0 = begin; b0 < end; b0 += L) {
    const int64_t count = std::min<int64_t>(L, end - b0);
    // Load (symmetrised or from the lower triangle) into lanes, with max |a_ij| and a
    // finiteness flag per lane: every loop below runs over the L lanes (vectorised).
    // Padding lanes of the last block repeat its last matrix (their output is dropped).
    // Transpose the block into lanes with contiguous reads (the entries of one matrix)
    // and L1-resident strided writes: no gather instructions (slow on x86).
    for (int l = 0; l < L; ++l) {
      const T* m = x + (b0 + std::min<int64_t>(l, count - 1)) * nn;
      for (int64_t e = 0; e < nn; ++e) raw[e * L + l] = m[e];
    }
    T amax[L], bad[L], ok[L];
    for (int l = 0; l < L; ++l) amax[l] = bad[l] = T(0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j <= i; ++j) {
        T *aij = A(i, j), *aji = A(j, i);
        const T *u_ = &raw[(i * n + j) * L], *z_ = &raw[(j * n + i) * L];
        for (int l = 0; l < L; ++l) {
          const T u = u_[l], z = z_[l];
          // u/2 + z/2, not (u + z)/2: entries above max/2 would overflow the sum
          const T val = symmetrize ? u * T(0.5) + z * T(0.5) : u;
          bad[l] += (u - u) + (z - z);  // NaN once an entry (either triangle) is not finite
          amax[l] = std::max(amax[l], std::abs(val));
          aij[l] = aji[l] = val;
        }
      }
    // amax = m 2^e with m in [0.5, 1); e clipped so that 2^e and 2^-e are both normal
    // numbers (subnormal input is scaled up only that far)
    const int lo = std::max(std::numeric_limits<T>::min_exponent, 1 - std::numeric_limits<T>::max_exponent);
    const int hi = std::min(std::numeric_limits<T>::max_exponent - 1, -std::numeric_limits<T>::min_exponent);
    for (int l = 0; l < L; ++l) {
      ok[l] = bad[l] == T(0) ? T(1) : T(0);  // 1 for a finite matrix, 0 otherwise
      const int e = (ok[l] != T(0) && amax[l] > 0) ? std::min(std::max(Exponent(amax[l]), lo), hi) : 0;
      scale[l] = Pow2<T>(-e);
      inv_scale[l] = Pow2<T>(e);
    }
    // A non-finite lane is replaced by the identity (no NaN in the sweeps' control).
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        T* ap = A(i, j);
        T* vp = Vm(i, j);
        const T id = (i == j) ? T(1) : T(0);
        for (int l = 0; l < L; ++l) {
          ap[l] = ok[l] != T(0) ? ap[l] * scale[l] : id;
          vp[l] = id;
        }
      }
    // Skip threshold of a_pq: max(eps sqrt|a_pp a_qq|, eps ||A||_F / n) (relative to the
    // diagonal, Demmel & Veselic 1992; the absolute floor keeps zero diagonals finite).
    // Skipped entries leave off(A)_F <= eps sqrt(n) ||A||_F. A sweep that rotates nothing
    // in any lane ends the loop; entries regenerated at rounding level by rotations (in a
    // degenerate cluster) stay below the threshold, so the loop cannot churn rounding.
    for (int l = 0; l < L; ++l) fro[l] = 0;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < n; ++j) {
        const T* ap = A(i, j);
        for (int l = 0; l < L; ++l) fro[l] += ap[l] * ap[l];
      }
    for (int l = 0; l < L; ++l) floor_[l] = eps * std::sqrt(fro[l]) / T(n);
    for (int sweep = 0; sweep < kMaxSweeps; ++sweep) {
      bool rotated = false;
      for (int64_t p = 0; p < n - 1; ++p)
        for (int64_t q = p + 1; q < n; ++q) {
          T c[L], s[L];
          const T *app = A(p, p), *aqq = A(q, q), *apq = A(p, q);
          for (int l = 0; l < L; ++l) {
            const T x_pq = apq[l];
            const T thresh = std::max(eps * std::sqrt(std::abs(app[l] * aqq[l])), floor_[l]);
            const bool rot = std::abs(x_pq) > thresh;
            const T theta = (aqq[l] - app[l]) / (T(2) * (rot ? x_pq : T(1)));
            const T at = std::abs(theta);
            T t = at > big_theta ? T(0.5) / at : T(1) / (at + std::sqrt(theta * theta + T(1)));
            t = theta < 0 ? -t : t;
            t = rot ? t : T(0);
            const T cc = T(1) / std::sqrt(t * t + T(1));
            c[l] = cc;
            s[l] = t * cc;
            keep[l] = rot ? T(0) : T(1);
          }
          T kept = 0;
          for (int l = 0; l < L; ++l) kept += keep[l];
          const bool any = kept < T(L);
          if (!any) continue;
          rotated = true;
          for (int64_t k = 0; k < n; ++k) {  // columns p, q of A
            T *akp = A(k, p), *akq = A(k, q);
            for (int l = 0; l < L; ++l) {
              const T u = akp[l], z = akq[l];
              akp[l] = c[l] * u - s[l] * z;
              akq[l] = s[l] * u + c[l] * z;
            }
          }
          for (int64_t k = 0; k < n; ++k) {  // rows p, q of A
            T *apk = A(p, k), *aqk = A(q, k);
            for (int l = 0; l < L; ++l) {
              const T u = apk[l], z = aqk[l];
              apk[l] = c[l] * u - s[l] * z;
              aqk[l] = s[l] * u + c[l] * z;
            }
          }
          {
            T *xpq = A(p, q), *xqp = A(q, p);
            for (int l = 0; l < L; ++l) xpq[l] = xqp[l] = keep[l] * xpq[l];
          }
          for (int64_t k = 0; V && k < n; ++k) {  // columns p, q of V
            T *vkp = Vm(k, p), *vkq = Vm(k, q);
            for (int l = 0; l < L; ++l) {
              const T u = vkp[l], z = vkq[l];
              vkp[l] = c[l] * u - s[l] * z;
              vkq[l] = s[l] * u + c[l] * z;
            }
          }
        }
      if (!rotated) break;
    }
    // Sort each lane ascending: odd-even transposition sort on the diagonal, moving the
    // eigenvector columns (n rounds; swaps only on strictly greater, so it is stable;
    // vectorised over the lanes), then store.
    for (int64_t j = 0; j < n; ++j) {
      const T* ajj = A(j, j);
      for (int l = 0; l < L; ++l) diag[j * L + l] = ajj[l];
    }
    for (int64_t round = 0; round < n; ++round)
      for (int64_t i = round % 2; i + 1 < n; i += 2) {
        T* __restrict__ di = &diag[i * L];
        T* __restrict__ dj = &diag[(i + 1) * L];
        alignas(64) T sw[L];
        for (int l = 0; l < L; ++l) {
          const T u = di[l], z = dj[l];
          sw[l] = u > z ? T(1) : T(0);
          di[l] = u > z ? z : u;
          dj[l] = u > z ? u : z;
        }
        for (int64_t k = 0; V && k < n; ++k) {
          T* __restrict__ vi = Vm(k, i);
          T* __restrict__ vj = Vm(k, i + 1);
          for (int l = 0; l < L; ++l) {
            const T u = vi[l], z = vj[l];
            vi[l] = sw[l] != T(0) ? z : u;
            vj[l] = sw[l] != T(0) ? u : z;
          }
        }
      }
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for (int64_t l = 0; l < count; ++l) {
      T* w = w_out + (b0 + l) * n;
      T* vv = V ? v_out + (b0 + l) * nn : nullptr;
      const bool fin = ok[l] != T(0);
      for (int64_t j = 0; j < n; ++j) w[j] = fin ? diag[j * L + l] * inv_scale[l] : nan;
      if (!V) continue;
      for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) vv[i * n + j] = fin ? Vm(i, j)[l] : nan;
    }
  }
}

template <typename T, bool V>
void Run(const T* xp, T* wp, T* vp, int64_t n, int64_t batch, bool symmetrize) {
  // Two threads or more only where the work outweighs starting them (~20 us each).
  const int64_t work = batch * n * n * n;
  int threads = static_cast<int>(std::min<int64_t>(std::max(1u, std::thread::hardware_concurrency()), 8));
  if (work < (int64_t(1) << 20)) threads = 1;
  threads = static_cast<int>(std::min<int64_t>(threads, (batch + Lanes<T>::L - 1) / Lanes<T>::L));
  void (*solve)(const T*, T*, T*, int64_t, int64_t, int64_t, bool) = SolveRange<T, 0, V>;
  switch (n) {
    case 2: solve = SolveRange<T, 2, V>; break;
    case 3: solve = SolveRange<T, 3, V>; break;
    case 4: solve = SolveRange<T, 4, V>; break;
    case 5: solve = SolveRange<T, 5, V>; break;
    case 6: solve = SolveRange<T, 6, V>; break;
    case 8: solve = SolveRange<T, 8, V>; break;
    case 16: solve = SolveRange<T, 16, V>; break;
    default: break;
  }
  if (threads <= 1) {
    solve(xp, wp, vp, n, 0, batch, symmetrize);
    return;
  }
  std::vector<std::thread> pool;
  const int64_t blocks = (batch + Lanes<T>::L - 1) / Lanes<T>::L;
  for (int t = 0; t < threads; ++t) {
    const int64_t begin = std::min(batch, blocks * t / threads * Lanes<T>::L);
    const int64_t end = std::min(batch, blocks * (t + 1) / threads * Lanes<T>::L);
    if (begin < end) pool.emplace_back(solve, xp, wp, vp, n, begin, end, symmetrize);
  }
  for (auto& th : pool) th.join();
}

template <ffi::DataType DT>
ffi::Error Shape(const ffi::Buffer<DT>& x, int64_t* n, int64_t* batch) {
  auto dims = x.dimensions();
  if (dims.size() < 2 || dims[dims.size() - 1] != dims[dims.size() - 2])
    return ffi::Error::InvalidArgument("eigjax small eigh: input must have shape (..., n, n)");
  *n = dims[dims.size() - 1];
  *batch = 1;
  for (size_t i = 0; i + 2 < dims.size(); ++i) *batch *= dims[i];
  return ffi::Error::Success();
}

template <typename T, ffi::DataType DT>
ffi::Error SmallEigh(ffi::Buffer<DT> x, ffi::ResultBuffer<DT> w, ffi::ResultBuffer<DT> v, int64_t symmetrize) {
  int64_t n, batch;
  if (auto err = Shape(x, &n, &batch); err.failure()) return err;
  Run<T, true>(x.typed_data(), w->typed_data(), v->typed_data(), n, batch, symmetrize != 0);
  return ffi::Error::Success();
}

template <typename T, ffi::DataType DT>
ffi::Error SmallEigvalsh(ffi::Buffer<DT> x, ffi::ResultBuffer<DT> w, int64_t symmetrize) {
  int64_t n, batch;
  if (auto err = Shape(x, &n, &batch); err.failure()) return err;
  Run<T, false>(x.typed_data(), w->typed_data(), nullptr, n, batch, symmetrize != 0);
  return ffi::Error::Success();
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(EigjaxSmallEighF32, (SmallEigh<float, ffi::F32>),
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("symmetrize"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EigjaxSmallEighF64, (SmallEigh<double, ffi::F64>),
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<int64_t>("symmetrize"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EigjaxSmallEigvalshF32, (SmallEigvalsh<float, ffi::F32>),
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F32>>()
                                  .Ret<ffi::Buffer<ffi::F32>>()
                                  .Attr<int64_t>("symmetrize"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(EigjaxSmallEigvalshF64, (SmallEigvalsh<double, ffi::F64>),
                              ffi::Ffi::Bind()
                                  .Arg<ffi::Buffer<ffi::F64>>()
                                  .Ret<ffi::Buffer<ffi::F64>>()
                                  .Attr<int64_t>("symmetrize"));
