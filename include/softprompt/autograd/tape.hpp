#pragma once
// Reverse-mode autograd that differentiates only what leads to a trainable parameter.
//
//   Param<T>  a trainable leaf: owns its value, its gradient and its name. Optimizers take Params.
//   Var<T>    a value in a computation; shares a node with the tape when the op was recorded.
//   Tape<T>   the ops recorded in execution order; backward(loss) runs them in reverse, once.
//
// Frozen weights are not Vars at all: ops take them as `WeightView<T>` (a read-only map), so no
// gradient buffer can exist for them and no weight-gradient product is ever formed.
// An op is recorded only when one of its inputs requires a gradient; otherwise it just computes its
// value. A forward pass with nothing trainable therefore records nothing and is pure inference.
//
// Threads: a Tape, its Vars and the Params used on it belong to one thread. Vars share nodes whose
// bookkeeping (reader counts, value leases) is not atomic, so never hand a Var to another thread:
// hand over its value, a Mat. There is no global state, so tapes on different threads are
// independent, also over one shared model.

#include <cmath>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/core/tensor.hpp"
#include "softprompt/error.hpp"
#include "softprompt/kernels/gemm.hpp"

namespace softprompt::autograd {

template <class T>
class Param;

namespace detail {

template <class T>
struct Node {
    Mat<T> owned;                      // the value, unless it is borrowed from a Param
    const Mat<T>* borrowed = nullptr;  // a Param's value, viewed rather than copied
    Mat<T> grad;                       // empty until a gradient reaches this node
    bool requires_grad = false;
    const char* op = "constant";
    // Receives this node's gradient and adds the inputs' gradients into their nodes.
    std::function<void(const Mat<T>& grad_out)> backward;
    Index rows = 0, cols = 0;  // the value's shape, known even after the value is released
    int readers = 0;           // recorded backward functions that read this value (see keep_value)
    bool released = false;

    const Mat<T>& value() const {
        if (released)
            throw ConfigError(std::string("autograd: the value of a '") + op +
                              "' node was released (no Var refers to it and no backward declared "
                              "that it reads it); an op reading an input in backward must call "
                              "detail::keep_value on it");
        return borrowed != nullptr ? *borrowed : owned;
    }
    void set_value(Mat<T> v) {
        rows = v.rows();
        cols = v.cols();
        owned = std::move(v);
    }
};

// Frees a node's value when the last Var referring to it goes away, unless a backward function
// still reads it. Activations that backward never reads (the input of a product with a frozen
// weight, a normalised or activated copy) therefore live only while the forward pass uses them:
// a training step keeps what its backward needs, not every intermediate.
template <class T>
struct ValueLease {
    std::weak_ptr<Node<T>> node;
    ValueLease(const ValueLease&) = delete;
    ValueLease& operator=(const ValueLease&) = delete;
    explicit ValueLease(const std::shared_ptr<Node<T>>& n) : node(n) {}
    ~ValueLease() {
        const auto n = node.lock();
        if (n == nullptr || n->readers > 0 || n->borrowed != nullptr) return;
        n->owned = Mat<T>();
        n->released = true;
    }
};

}  // namespace detail

/// A value in a computation: the output of an op, a constant, or a Param used on a tape.
template <class T>
class Var {
public:
    Var() = default;

    bool defined() const { return node_ != nullptr; }
    const Mat<T>& value() const { return node_->value(); }
    Index rows() const { return node_->value().rows(); }
    Index cols() const { return node_->value().cols(); }
    bool requires_grad() const { return node_ != nullptr && node_->requires_grad; }
    /// Name of the op that produced this value ("constant" for inputs).
    const char* op() const { return node_->op; }
    /// The scalar of a [1 x 1] value (a loss).
    T item() const {
        if (rows() != 1 || cols() != 1)
            throw ShapeError::mismatch("Var::item", "value", 1, 1, rows(), cols());
        return value()(0, 0);
    }

    // For ops: the shared node. Only the tape makes Vars, one per node; copies share its lease.
    const std::shared_ptr<detail::Node<T>>& node() const { return node_; }
    explicit Var(std::shared_ptr<detail::Node<T>> node)
        : node_(std::move(node)), lease_(std::make_shared<detail::ValueLease<T>>(node_)) {}

private:
    std::shared_ptr<detail::Node<T>> node_;
    std::shared_ptr<detail::ValueLease<T>> lease_;
};

/// A trainable leaf. It must stay at one address while a tape uses it (tapes view its value).
template <class T>
class Param {
public:
    Param(std::string name, Mat<T> value)
        : name_(std::move(name)),
          value_(std::move(value)),
          grad_(Mat<T>::Zero(value_.rows(), value_.cols())) {}

    Param(const Param&) = delete;
    Param& operator=(const Param&) = delete;
    Param(Param&&) noexcept = default;
    Param& operator=(Param&&) noexcept = default;

    const std::string& name() const { return name_; }
    Mat<T>& value() { return value_; }
    const Mat<T>& value() const { return value_; }
    /// Accumulated gradient; backward adds into it, zero_grad() clears it.
    Mat<T>& grad() { return grad_; }
    const Mat<T>& grad() const { return grad_; }
    void zero_grad() { grad_.setZero(); }
    Index size() const { return value_.size(); }
    /// Replace the value (any shape) and reset the gradient to zeros of that shape.
    void assign(Mat<T> value) {
        value_ = std::move(value);
        grad_ = Mat<T>::Zero(value_.rows(), value_.cols());
    }

    /// A Param that is not trainable enters a tape as a constant (no gradient, nothing recorded).
    bool trainable() const { return trainable_; }
    void set_trainable(bool on) { trainable_ = on; }

private:
    std::string name_;
    Mat<T> value_;
    Mat<T> grad_;
    bool trainable_ = true;
};

/// What a tape did, for tests and profiling: matrix products of matmul ops by role, and how much
/// gradient storage backward allocated. A frozen weight costs no weight-gradient product and no
/// gradient bytes, and these counters show it.
struct TapeStats {
    std::size_t forward_products = 0;      // forward products of matmul ops
    std::size_t input_grad_products = 0;   // backward products forming d(left operand)
    std::size_t weight_grad_products = 0;  // backward products forming d(right operand) = d(weight)
    std::size_t grad_bytes = 0;            // gradient buffers allocated by backward calls so far

    TapeStats& operator+=(const TapeStats& other) {
        forward_products += other.forward_products;
        input_grad_products += other.input_grad_products;
        weight_grad_products += other.weight_grad_products;
        grad_bytes += other.grad_bytes;
        return *this;
    }
};

template <class T>
class Tape {
public:
    Tape() = default;
    Tape(const Tape&) = delete;
    Tape& operator=(const Tape&) = delete;

    /// An input that needs no gradient (token activations, masks). Never recorded.
    Var<T> constant(Mat<T> value) const {
        auto node = std::make_shared<detail::Node<T>>();
        node->set_value(std::move(value));
        return Var<T>(std::move(node));
    }

    /// A constant that views `value` rather than copying it; `value` must outlive the Var (a
    /// served adapter's matrices, read by every pass).
    Var<T> constant_view(const Mat<T>& value) const {
        auto node = std::make_shared<detail::Node<T>>();
        node->borrowed = &value;
        node->rows = value.rows();
        node->cols = value.cols();
        return Var<T>(std::move(node));
    }
    Var<T> constant_view(Mat<T>&&) const = delete;  // would dangle

    /// Use a Param on this tape: a leaf whose gradient backward adds into `p.grad()`.
    Var<T> param(Param<T>& p) {
        auto node = std::make_shared<detail::Node<T>>();
        node->borrowed = &p.value();
        node->rows = p.value().rows();
        node->cols = p.value().cols();
        node->op = "param";
        if (!p.trainable()) return Var<T>(std::move(node));
        node->requires_grad = true;
        Param<T>* target = &p;
        node->backward = [target](const Mat<T>& g) { target->grad() += g; };
        nodes_.push_back(node);
        ++params_used_;
        return Var<T>(std::move(node));
    }

    /// For ops: wrap a computed value. When any input requires a gradient, the node is recorded
    /// with `backward`, which receives the node's gradient; otherwise `backward` is dropped
    /// unbuilt.
    template <class Backward>
    Var<T> record(const char* op, Mat<T> value, bool any_input_requires_grad, Backward&& backward) {
        auto node = std::make_shared<detail::Node<T>>();
        node->set_value(std::move(value));
        node->op = op;
        if (any_input_requires_grad) {
            node->requires_grad = true;
            node->backward = std::forward<Backward>(backward);
            nodes_.push_back(node);
        }
        return Var<T>(std::move(node));
    }

    /// Backpropagate from a scalar loss into every trainable Param that it depends on. Each
    /// recorded node's backward runs once, then its gradient and captured caches are freed; the
    /// tape is empty afterwards (record a new forward pass for the next step).
    void backward(const Var<T>& loss) {
        if (!loss.defined()) throw ConfigError("Tape::backward: the loss is an empty Var");
        if (loss.rows() != 1 || loss.cols() != 1)
            throw ShapeError::mismatch("Tape::backward", "loss", 1, 1, loss.rows(), loss.cols());
        if (!std::isfinite(static_cast<double>(loss.item())))
            throw NumericError("Tape::backward: the loss is " + std::to_string(loss.item()) +
                               "; refusing to propagate a non-finite loss into the parameters");
        if (!loss.requires_grad())
            throw ConfigError(
                "nothing to train: the loss does not depend on any trainable parameter "
                "(use tape.param(p) for each Param the forward pass should train; " +
                std::to_string(params_used_) + " trainable Param(s) were used on this tape)");
        loss.node()->grad = Mat<T>::Ones(1, 1);
        propagate();
    }

    /// Backward from a value of any shape given its gradient `grad_out` (same shape), for an op
    /// that runs a tape of its own inside (checkpoint). When `out` depends on nothing trainable
    /// there is nothing to propagate: the tape is only cleared.
    void backward(const Var<T>& out, const Mat<T>& grad_out) {
        if (!out.defined()) throw ConfigError("Tape::backward: the output is an empty Var");
        if (grad_out.rows() != out.rows() || grad_out.cols() != out.cols())
            throw ShapeError::mismatch("Tape::backward", "grad_out", out.rows(), out.cols(),
                                       grad_out.rows(), grad_out.cols());
        if (!out.requires_grad()) {
            clear();
            return;
        }
        out.node()->grad = grad_out;
        propagate();
    }

    /// Drop every recorded node without running backward (e.g. after an evaluation pass).
    void clear() {
        nodes_.clear();
        params_used_ = 0;
    }

    /// Number of ops (including Param leaves) currently recorded.
    std::size_t recorded() const { return nodes_.size(); }

    TapeStats& stats() { return stats_; }
    const TapeStats& stats() const { return stats_; }

private:
    void propagate() {
        for (auto it = nodes_.rbegin(); it != nodes_.rend(); ++it) {
            detail::Node<T>& node = **it;
            if (node.grad.size() != 0 && node.backward) node.backward(node.grad);
            node.backward = nullptr;  // releases the caches and input nodes it captured
            // Every gradient buffer lives on a recorded node (only they require gradients), so
            // counting here, as each is freed, counts them all.
            stats_.grad_bytes += std::size_t(node.grad.size()) * sizeof(T);
            node.grad.resize(0, 0);
        }
        clear();
    }

    std::vector<std::shared_ptr<detail::Node<T>>> nodes_;
    std::size_t params_used_ = 0;
    TapeStats stats_;
};

namespace detail {

/// Add `contribution` into the gradient of `node`, allocating it on first use (no zero fill).
template <class T, class Expr>
void accumulate_grad(Node<T>& node, const Expr& contribution) {
    if (node.grad.size() == 0) {
        node.grad.resize(node.rows, node.cols);
        node.grad.noalias() = contribution;
    } else {
        node.grad.noalias() += contribution;
    }
}

/// The node of an input whose value the op's backward reads: the value then outlives the Vars that
/// refer to it, until backward has run. Ops call it only when they are recorded.
template <class T>
std::shared_ptr<Node<T>> keep_value(const Var<T>& x) {
    if (x.defined()) ++x.node()->readers;
    return x.node();
}

/// node.grad += a·b through the shared GEMM kernel (the large products of backward).
template <class T, class A, class B>
void accumulate_product(Node<T>& node, const A& a, const B& b) {
    if (node.grad.size() == 0) {
        node.grad.resize(node.rows, node.cols);
        kernels::gemm(node.grad, a, b);
    } else {
        kernels::gemm_accumulate(node.grad, a, b);
    }
}

/// The gradient buffer of `node`, zero-filled on first use, for ops that scatter into parts of it.
template <class T>
Mat<T>& grad_buffer(Node<T>& node) {
    if (node.grad.size() == 0) node.grad = Mat<T>::Zero(node.rows, node.cols);
    return node.grad;
}

}  // namespace detail

}  // namespace softprompt::autograd
