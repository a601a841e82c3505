#pragma once
// safetensors: the header parser (SafetensorsFile) and every way of reading a tensor's data
// (raw bytes, values, matrix, weight views and conversions), on any bytes.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "../fuzz_util.hpp"
#include "softprompt/io/safetensors.hpp"

namespace softprompt_fuzz {

/// One input of the safetensors target (see the top of this file).
inline void safetensors(std::string_view input) {
    using namespace softprompt;
    const std::string path = softprompt_fuzz::scratch_file("model.safetensors", input);
    try {
        const io::SafetensorsFile file(path);
        io::TensorStore store;
        for (const auto& [name, info] : file.tensors()) {
            (void)file.raw(name);
            (void)file.header_offset_of(name);
            // Each reader on its own: one that throws must not hide the others.
            try {
                (void)file.values<float>(name);
            } catch (const Error& e) {
                softprompt_fuzz::rejected(e);
            }
            try {
                (void)file.matrix<double>(name);
            } catch (const Error& e) {
                softprompt_fuzz::rejected(e);
            }
            // A weight of the tensor's own shape (vectors as [1, n]), then of a wrong one.
            const Index rows = info.shape.size() == 2 ? Index(info.shape[0]) : 1;
            const Index cols = info.shape.empty() ? 1 : Index(info.shape.back());
            try {
                (void)file.weight<float>(name, rows, cols, store);
                (void)file.weight<double>(name, rows, cols, store);
            } catch (const Error& e) {
                softprompt_fuzz::rejected(e);
            }
            try {
                (void)file.weight<float>(name, rows == 1 ? 2 : 1, cols, store);
            } catch (const Error& e) {
                softprompt_fuzz::rejected(e);
            }
        }
        (void)file.info("no such tensor");
    } catch (const Error& e) {
        // The contract: bad bytes throw a softprompt::Error subclass, nothing else.
        softprompt_fuzz::rejected(e);
    }
}

}  // namespace softprompt_fuzz
