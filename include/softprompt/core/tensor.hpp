#pragma once
// Tensor aliases used everywhere: row-major dynamic Eigen matrices and views of them.
// Activations are 2-D: a batch of B sequences of length S and width d is a [B*S, d] matrix, and
// attention heads are column blocks. Keep every view row-major: a column-major Ref of a row-major
// matrix silently copies.

#include <Eigen/Core>
#include <cstdint>
#include <string>
#include <type_traits>

namespace softprompt {

using Index = Eigen::Index;

template <class T>
using Mat = Eigen::Matrix<T, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Row vector (bias, norm gain) stored like one row of a Mat.
template <class T>
using RowVec = Eigen::Matrix<T, 1, Eigen::Dynamic, Eigen::RowMajor>;

/// Writable view of any row-major matrix or block of one.
template <class T>
using MatRef = Eigen::Ref<Mat<T>>;

/// Read-only view; take inputs as `ConstRef<T>` (a const reference to a const Ref).
template <class T>
using ConstRef = const Eigen::Ref<const Mat<T>>&;

/// Read-only view of memory the library does not own (a frozen weight, often an mmap of a file).
template <class T>
using ConstMap = Eigen::Map<const Mat<T>>;

/// "[rows x cols]" for error messages.
inline std::string shape_string(Index rows, Index cols) {
    // Appended piece by piece: GCC 12 warns (-Wrestrict, falsely) on the chained operator+ form.
    std::string s = "[";
    s += std::to_string(rows);
    s += " x ";
    s += std::to_string(cols);
    s += "]";
    return s;
}

}  // namespace softprompt

namespace softprompt {

/// Read-only view of a frozen weight: any row-major matrix, map or block of one (row stride may
/// exceed the width, so a column slice of a fused weight is a view too). Ops take it by value and
/// keep it for backward, so the viewed memory must outlive the tape — as a model's weights do.
template <class T>
using WeightView = Eigen::Map<const Mat<T>, Eigen::Unaligned, Eigen::OuterStride<>>;

/// How ops take a frozen weight: a WeightView in a non-deduced context, so that anything that
/// converts to one (a `Weight`, the result of `frozen(m)`) can be passed.
template <class T>
using WeightArg = std::type_identity_t<WeightView<T>>;

/// A frozen tensor held by a model: where its elements are, and its 2-D shape (vectors are
/// [1, n]). Unlike an Eigen Map it can be default-built and re-assigned, so models can store it.
template <class T>
struct Weight {
    const T* data = nullptr;
    Index rows = 0;
    Index cols = 0;

    bool empty() const { return data == nullptr; }
    WeightView<T> view() const {
        return WeightView<T>(data, rows, cols, Eigen::OuterStride<>(cols));
    }
    operator WeightView<T>() const { return view(); }  // NOLINT: implicit by design
};

/// View any row-major dense matrix expression with contiguous rows as a frozen weight.
template <class Derived>
WeightView<typename Derived::Scalar> frozen(const Eigen::DenseBase<Derived>& m) {
    static_assert(
        Derived::IsRowMajor || Derived::ColsAtCompileTime == 1 || Derived::RowsAtCompileTime == 1,
        "frozen(): pass a row-major matrix (softprompt::Mat) or a block of one");
    const Derived& d = m.derived();
    // A row-major matrix steps rows by its outer stride; a column vector steps rows by 1.
    const Index stride = Derived::IsRowMajor ? Index(d.outerStride()) : Index(d.innerStride());
    return WeightView<typename Derived::Scalar>(d.data(), d.rows(), d.cols(),
                                                Eigen::OuterStride<>(stride));
}

}  // namespace softprompt
