#pragma once
// The library's exceptions: one root (`softprompt::Error`) and one subclass per kind of failure.
// Messages name the op / file / tensor, what was expected and what was found, so a caller can act
// on them without a debugger. Factory functions build those messages in one place.

#include <cstdint>
#include <stdexcept>
#include <string>
#include <string_view>

namespace softprompt {

/// Root of every exception the library throws.
class Error : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

/// A tensor had the wrong shape for an op, or two operands disagree.
class ShapeError : public Error {
public:
    using Error::Error;

    /// "<op>: <what> expected [r x c], found [r x c]"
    static ShapeError mismatch(std::string_view op, std::string_view what, std::int64_t want_rows,
                               std::int64_t want_cols, std::int64_t rows, std::int64_t cols) {
        return ShapeError(std::string(op) + ": " + std::string(what) + " expected [" +
                          std::to_string(want_rows) + " x " + std::to_string(want_cols) +
                          "], found [" + std::to_string(rows) + " x " + std::to_string(cols) + "]");
    }

    /// "<op>: <what>: <a_name> is [r x c] but <b_name> is [r x c]"
    static ShapeError operands(std::string_view op, std::string_view what, std::string_view a_name,
                               std::int64_t a_rows, std::int64_t a_cols, std::string_view b_name,
                               std::int64_t b_rows, std::int64_t b_cols) {
        return ShapeError(std::string(op) + ": " + std::string(what) + ": " + std::string(a_name) +
                          " is [" + std::to_string(a_rows) + " x " + std::to_string(a_cols) +
                          "] but " + std::string(b_name) + " is [" + std::to_string(b_rows) +
                          " x " + std::to_string(b_cols) + "]");
    }
};

/// A file's bytes do not follow its format (truncated, corrupt, unsupported).
class FormatError : public Error {
public:
    using Error::Error;

    static FormatError at(std::string_view file, std::uint64_t offset, std::string_view what) {
        return FormatError(std::string(file) + " at byte " + std::to_string(offset) + ": " +
                           std::string(what));
    }
};

/// The operating system refused a file operation (open, map, write, rename).
class IoError : public Error {
public:
    using Error::Error;
};

/// A configuration value is missing, unknown or out of range; also misuse such as training with
/// nothing trainable.
class ConfigError : public Error {
public:
    using Error::Error;
};

/// A computation produced a value that cannot be used (NaN or infinite loss, empty average).
class NumericError : public Error {
public:
    using Error::Error;
};

}  // namespace softprompt
