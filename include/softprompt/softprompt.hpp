#pragma once
// Umbrella header: everything a user of softprompt needs.

#include "softprompt/version.hpp"
#include "softprompt/error.hpp"
#include "softprompt/core/tensor.hpp"
#include "softprompt/kernels/gemm.hpp"
#include "softprompt/kernels/activation.hpp"
#include "softprompt/kernels/norm.hpp"
#include "softprompt/kernels/softmax.hpp"
#include "softprompt/kernels/rope.hpp"
#include "softprompt/kernels/attention.hpp"
#include "softprompt/autograd/tape.hpp"
#include "softprompt/autograd/ops.hpp"
#include "softprompt/autograd/nn_ops.hpp"
#include "softprompt/autograd/gradcheck.hpp"
#include "softprompt/optim/sgd.hpp"
