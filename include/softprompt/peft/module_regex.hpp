#pragma once
// The regular expressions of PEFT's configs (target_modules given as a string, the keys of
// rank_pattern and alpha_pattern), matched whole against module names as Python's re.fullmatch
// does. The subset of Python's syntax they use: literals and escapes (\. \d \D \w \W \s \S and
// escaped punctuation), `.`, classes ([a-z_], [^0-9], with the class escapes inside), groups
// ((...), (?:...)) with alternation, lookaheads ((?=...), (?!...): PEFT's configs exclude modules
// with them), anchors ^ and $, and the quantifiers * + ? {m} {m,} {m,n} (greedy or lazy: a whole
// match does not depend on it). Anything else is a ConfigError naming the pattern and what was not
// understood; so are matches that take more than a budget of steps (nested quantifiers can make
// backtracking exponential) or nest deeper than a bound (a long run of repetitions), so a hostile
// config can neither crash nor hang a load.
// A hand-written matcher rather than std::regex: libstdc++'s recursion grows with the input and
// its headers warn under -Werror at -O2 with GCC 12.

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "softprompt/error.hpp"

namespace softprompt::peft {

class ModuleRegex {
public:
    explicit ModuleRegex(std::string pattern) : pattern_(std::move(pattern)) {
        std::size_t at = 0;
        root_.kind = Node::kGroup;
        root_.alternatives = parse_alternatives(at, 0);
        if (at != pattern_.size()) fail(at, "an unmatched ')'");
    }

    const std::string& pattern() const { return pattern_; }

    /// The steps a match may take, or several matches sharing one budget.
    static constexpr std::size_t kStepBudget = 10'000'000;

    /// Whether the whole of `text` matches (Python's re.fullmatch). `budget` is decremented by the
    /// steps taken; a match that would exhaust it throws ConfigError.
    bool full_match(const std::string& text, std::size_t& budget) const {
        std::size_t depth = 0;
        const Matcher m{text, budget, pattern_, depth};
        return m.one(root_, 0, [&](std::size_t end) { return end == text.size(); });
    }
    bool full_match(const std::string& text) const {
        std::size_t budget = kStepBudget;
        return full_match(text, budget);
    }

private:
    struct Node {
        enum Kind { kChar, kAny, kClass, kGroup, kLookahead, kStart, kEnd } kind = kChar;
        char c = 0;
        std::vector<std::pair<unsigned char, unsigned char>> ranges;  // kClass
        bool negated = false;                         // kClass: [^...]; kLookahead: (?!...)
        std::vector<std::vector<Node>> alternatives;  // kGroup, kLookahead
        int min = 1, max = 1;                         // repetitions; max < 0: unbounded
    };

    [[noreturn]] void fail(std::size_t at, const std::string& what) const {
        throw ConfigError("regular expression '" + pattern_ + "': " + what + " at offset " +
                          std::to_string(at));
    }

    std::vector<std::vector<Node>> parse_alternatives(std::size_t& at, int depth) {
        if (depth > 64) fail(at, "groups nested more than 64 deep");
        std::vector<std::vector<Node>> alternatives(1);
        while (at < pattern_.size() && pattern_[at] != ')') {
            if (pattern_[at] == '|') {
                ++at;
                alternatives.emplace_back();
                continue;
            }
            Node atom = parse_atom(at, depth);
            parse_quantifier(at, atom);
            alternatives.back().push_back(std::move(atom));
        }
        return alternatives;
    }

    // The ranges of a class escape (\d \w \s), negated for the upper-case letter.
    static bool class_escape(char e, std::vector<std::pair<unsigned char, unsigned char>>& ranges,
                             bool& negated) {
        switch (e) {
            case 'd':
            case 'D':
                ranges = {{'0', '9'}};
                break;
            case 'w':
            case 'W':
                ranges = {{'a', 'z'}, {'A', 'Z'}, {'0', '9'}, {'_', '_'}};
                break;
            case 's':
            case 'S':
                ranges = {{' ', ' '}, {'\t', '\r'}};
                break;
            default:
                return false;
        }
        negated = e >= 'A' && e <= 'Z';
        return true;
    }

    // An escaped character standing for itself: punctuation, and \t \n \r.
    char literal_escape(std::size_t at, char e) const {
        if (e == 't') return '\t';
        if (e == 'n') return '\n';
        if (e == 'r') return '\r';
        const bool alnum =
            (e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9');
        if (alnum) fail(at, std::string("the escape \\") + e + " (not supported)");
        return e;
    }

    Node parse_atom(std::size_t& at, int depth) {
        Node n;
        const char c = pattern_[at];
        switch (c) {
            case '(': {
                ++at;
                n.kind = Node::kGroup;
                if (pattern_.compare(at, 2, "?:") == 0) {
                    at += 2;
                } else if (pattern_.compare(at, 2, "?=") == 0 ||
                           pattern_.compare(at, 2, "?!") == 0) {
                    n.kind = Node::kLookahead;
                    n.negated = pattern_[at + 1] == '!';
                    at += 2;
                } else if (at < pattern_.size() && pattern_[at] == '?') {
                    fail(at, "a group extension (?" +
                                 std::string(1, at + 1 < pattern_.size() ? pattern_[at + 1] : ' ') +
                                 " (not supported)");
                }
                n.alternatives = parse_alternatives(at, depth + 1);
                if (at >= pattern_.size()) fail(at, "a '(' without its ')'");
                ++at;
                return n;
            }
            case '[':
                return parse_class(at);
            case '.':
                ++at;
                n.kind = Node::kAny;
                return n;
            case '^':
                ++at;
                n.kind = Node::kStart;
                return n;
            case '$':
                ++at;
                n.kind = Node::kEnd;
                return n;
            case '\\': {
                if (at + 1 >= pattern_.size()) fail(at, "a trailing backslash");
                const char e = pattern_[at + 1];
                at += 2;
                if (class_escape(e, n.ranges, n.negated)) {
                    n.kind = Node::kClass;
                    return n;
                }
                n.c = literal_escape(at - 2, e);
                return n;
            }
            case '*':
            case '+':
            case '?':
            case '{':
                fail(at, std::string("a quantifier '") + c + "' with nothing to repeat");
            default:
                ++at;
                n.c = c;
                return n;
        }
    }

    Node parse_class(std::size_t& at) {
        Node n;
        n.kind = Node::kClass;
        const std::size_t open = at++;
        if (at < pattern_.size() && pattern_[at] == '^') {
            n.negated = true;
            ++at;
        }
        bool first = true;
        while (at < pattern_.size() && (pattern_[at] != ']' || first)) {
            first = false;
            unsigned char lo = static_cast<unsigned char>(pattern_[at]);
            if (lo == '\\') {
                if (at + 1 >= pattern_.size()) fail(at, "a trailing backslash");
                std::vector<std::pair<unsigned char, unsigned char>> escaped;
                bool negated = false;
                if (class_escape(pattern_[at + 1], escaped, negated)) {
                    if (negated) fail(at, "a negated class escape inside [...] (not supported)");
                    n.ranges.insert(n.ranges.end(), escaped.begin(), escaped.end());
                    at += 2;
                    continue;
                }
                lo = static_cast<unsigned char>(literal_escape(at, pattern_[at + 1]));
                ++at;
            }
            ++at;
            unsigned char hi = lo;
            if (at + 1 < pattern_.size() && pattern_[at] == '-' && pattern_[at + 1] != ']') {
                hi = static_cast<unsigned char>(pattern_[at + 1]);
                if (hi == '\\') fail(at + 1, "an escape as a range's end (not supported)");
                if (hi < lo) fail(at, "a range from a larger to a smaller character");
                at += 2;
            }
            n.ranges.emplace_back(lo, hi);
        }
        if (at >= pattern_.size()) fail(open, "a '[' without its ']'");
        ++at;
        return n;
    }

    void parse_quantifier(std::size_t& at, Node& atom) {
        if (at >= pattern_.size()) return;
        const char q = pattern_[at];
        if (q == '*' || q == '+' || q == '?') {
            atom.min = q == '+' ? 1 : 0;
            atom.max = q == '?' ? 1 : -1;
            ++at;
        } else if (q == '{') {
            std::size_t end = pattern_.find('}', at);
            if (end == std::string::npos) fail(at, "a '{' without its '}'");
            const std::string inside = pattern_.substr(at + 1, end - at - 1);
            auto number = [&](const std::string& digits) {
                if (digits.empty() || digits.size() > 4 ||
                    digits.find_first_not_of("0123456789") != std::string::npos)
                    fail(at, "a repetition {" + inside +
                                 "} (expected {m}, {m,} or {m,n}, m, n < 10000)");
                return std::stoi(digits);
            };
            const std::size_t comma = inside.find(',');
            atom.min = number(inside.substr(0, comma));
            atom.max = comma == std::string::npos   ? atom.min
                       : comma + 1 == inside.size() ? -1
                                                    : number(inside.substr(comma + 1));
            if (atom.max >= 0 && atom.max < atom.min)
                fail(at, "a repetition {" + inside + "} with n < m");
            at = end + 1;
        } else {
            return;
        }
        if (atom.kind == Node::kStart || atom.kind == Node::kEnd || atom.kind == Node::kLookahead)
            fail(at, "a quantifier on an anchor or a lookahead");
        if (at < pattern_.size() && pattern_[at] == '?') ++at;  // lazy: the same for a whole match
        if (at < pattern_.size() && (pattern_[at] == '*' || pattern_[at] == '+' ||
                                     pattern_[at] == '?' || pattern_[at] == '{'))
            fail(at, "a repeated quantifier");
    }

    // Backtracking over the parsed pattern; `next` receives the position after a match and says
    // whether the rest of the pattern matches from there.
    struct Matcher {
        using Next = std::function<bool(std::size_t)>;
        // Each repetition nests a few frames; legitimate patterns on module names stay far below.
        static constexpr std::size_t kMaxDepth = 2000;
        const std::string& text;
        std::size_t& budget;
        const std::string& pattern;
        std::size_t& depth;

        void count() const {
            if (budget == 0)
                throw ConfigError("regular expression '" + pattern +
                                  "': too many backtracking steps matching '" + text +
                                  "' (nested quantifiers?)");
            --budget;
        }

        // Bounds the recursion, so that a pattern of many repetitions cannot exhaust the stack.
        struct Deeper {
            std::size_t& depth;
            explicit Deeper(const Matcher& m) : depth(m.depth) {
                if (++depth > kMaxDepth) {
                    --depth;
                    throw ConfigError("regular expression '" + m.pattern +
                                      "': nests repetitions too deeply matching '" + m.text + "'");
                }
            }
            ~Deeper() { --depth; }
            Deeper(const Deeper&) = delete;
            Deeper& operator=(const Deeper&) = delete;
        };

        bool sequence(const std::vector<Node>& seq, std::size_t i, std::size_t pos,
                      const Next& next) const {
            if (i == seq.size()) return next(pos);
            return repeat(seq[i], 0, pos,
                          [&](std::size_t p) { return sequence(seq, i + 1, p, next); });
        }

        // Greedy: as many repetitions as match, then fewer.
        bool repeat(const Node& n, int done, std::size_t pos, const Next& next) const {
            count();
            const Deeper guard(*this);
            if (n.max < 0 || done < n.max) {
                const bool more = single(n, pos, [&](std::size_t p) {
                    if (p == pos && done >= n.min) return false;  // an empty repetition: stop
                    return repeat(n, done + 1, p, next);
                });
                if (more) return true;
            }
            return done >= n.min && next(pos);
        }

        bool single(const Node& n, std::size_t pos, const Next& next) const {
            count();
            const bool more = pos < text.size();
            const unsigned char c = more ? static_cast<unsigned char>(text[pos]) : 0;
            switch (n.kind) {
                case Node::kChar:
                    return more && text[pos] == n.c && next(pos + 1);
                case Node::kAny:
                    return more && c != '\n' && next(pos + 1);
                case Node::kClass: {
                    if (!more) return false;
                    bool in = false;
                    for (const auto& [lo, hi] : n.ranges) in = in || (c >= lo && c <= hi);
                    return in != n.negated && next(pos + 1);
                }
                case Node::kStart:
                    return pos == 0 && next(pos);
                case Node::kEnd:
                    return pos == text.size() && next(pos);
                case Node::kGroup:
                    for (const auto& alternative : n.alternatives)
                        if (sequence(alternative, 0, pos, next)) return true;
                    return false;
                case Node::kLookahead: {
                    bool found = false;
                    for (const auto& alternative : n.alternatives)
                        found = found ||
                                sequence(alternative, 0, pos, [](std::size_t) { return true; });
                    return found != n.negated && next(pos);
                }
            }
            return false;
        }

        bool one(const Node& n, std::size_t pos, const Next& next) const {
            return repeat(n, 0, pos, next);
        }
    };

    std::string pattern_;
    Node root_;
};

}  // namespace softprompt::peft
