#pragma once
// Activation checkpointing: an op that runs a function of Vars on a tape of its own, keeps only its
// result, and runs it again in backward to get the gradients. A training step then holds, for each
// checkpointed run of layers, its input and output instead of every activation inside, for the
// price of a second forward pass through it.
//
//   y = checkpoint(tape, {x1, x2, ...}, f)     f: (Tape<T>&, const std::vector<Var<T>>&) -> Var<T>
//
// f receives the inputs as Vars of the inner tape. It may also use Vars of the outer tape that it
// captures by value (a layer's prefix keys, its LoRA factors): their values stay alive with f, and
// the recomputation's backward adds their gradients into their outer nodes, which the outer
// backward reaches later (they were recorded before this op). f must give the same value when run
// again (no randomness of its own), and is copied into the op: it must own what it reads.

#include <string>
#include <utility>
#include <vector>

#include "softprompt/autograd/tape.hpp"
#include "softprompt/error.hpp"

namespace softprompt::autograd {

template <class T, class F>
Var<T> checkpoint(Tape<T>& tape, const std::vector<Var<T>>& inputs, F f) {
    bool any_input_requires_grad = false;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        if (!inputs[i].defined())
            throw ConfigError("checkpoint: input " + std::to_string(i) + " is an empty Var");
        any_input_requires_grad = any_input_requires_grad || inputs[i].requires_grad();
    }
    Mat<T> y;
    bool requires_grad = any_input_requires_grad;
    {
        // Forward: the inputs as constants, so the inner tape records only what f's captured Vars
        // need, and all of it goes when the inner tape does.
        Tape<T> inner;
        std::vector<Var<T>> in;
        in.reserve(inputs.size());
        for (const Var<T>& x : inputs) in.push_back(inner.constant_view(x.value()));
        const Var<T> out = f(inner, in);
        y = out.value();
        requires_grad = requires_grad || out.requires_grad();
        tape.stats() += inner.stats();
    }
    if (!requires_grad) return tape.constant(std::move(y));

    std::vector<std::shared_ptr<detail::Node<T>>> nodes;
    nodes.reserve(inputs.size());
    for (const Var<T>& x : inputs) nodes.push_back(detail::keep_value(x));
    Tape<T>* outer = &tape;
    return tape.record(
        "checkpoint", std::move(y), true,
        [nodes = std::move(nodes), f = std::move(f), outer](const Mat<T>& dy) {
            // Recompute with the inputs that need a gradient as Params of the inner tape (their
            // gradients collect there), then hand those gradients to the outer nodes.
            Tape<T> inner;
            std::vector<Param<T>> leaves;
            leaves.reserve(nodes.size());
            std::vector<Var<T>> in;
            in.reserve(nodes.size());
            for (const auto& node : nodes) {
                if (node->requires_grad) {
                    leaves.emplace_back("checkpoint.input", node->value());
                    in.push_back(inner.param(leaves.back()));
                } else {
                    in.push_back(inner.constant_view(node->value()));
                }
            }
            const Var<T> out = f(inner, in);
            inner.backward(out, dy);
            outer->stats() += inner.stats();
            std::size_t leaf = 0;
            for (const auto& node : nodes)
                if (node->requires_grad) detail::accumulate_grad(*node, leaves[leaf++].grad());
        });
}

}  // namespace softprompt::autograd
