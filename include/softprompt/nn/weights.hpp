#pragma once
// Binding a model's frozen tensors by name. Loaders (llama2.c, safetensors, GGUF, test fixtures)
// provide a `WeightLookup`: given a tensor name and the shape the architecture expects, it returns
// a read-only view or throws a FormatError naming the tensor and both shapes.

#include <functional>
#include <string>

#include "softprompt/core/tensor.hpp"

namespace softprompt::nn {

/// (name, expected rows, expected cols) -> view. 1-D tensors are expected as [1, n].
template <class T>
using WeightLookup = std::function<Weight<T>(const std::string& name, Index rows, Index cols)>;

}  // namespace softprompt::nn
