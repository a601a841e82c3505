#pragma once
// Data-parallel training over MPI. Optional: this is the only header that includes <mpi.h>, the
// umbrella header does not include it, and a program that uses it links MPI (CMake:
// find_package(MPI) and MPI::MPI_CXX). Every process holds the frozen model read-only (a mapped
// file's pages are shared by the processes of one node) and the same data set; only the trainable
// parameters' gradients cross the network, one int64 all-reduce of their size per step (see
// train/collective.hpp for why int64: the result is the same bits on any number of processes).
//
//   dist::MpiSession mpi(argc, argv);          MPI_Init ... MPI_Finalize
//   dist::MpiGroup group;                      MPI_COMM_WORLD as a train::Collective
//   options.data_parallel_shards = 8;          the same whatever the number of processes
//   train::Trainer<Arch, float> trainer(model, method, optimizer, options, group);
//   return dist::run_or_abort(group, [&] { trainer.fit(data, &eval); if (group.rank() == 0) save(...); });
//
// Faults: a process that throws must not leave the others waiting in a collective for ever.
// run_or_abort prints the error with the rank and calls MPI_Abort, which ends every process of the
// job at once; a process that dies is noticed by the launcher (mpirun), which ends the others.
// Resume from the last state saved by rank 0, with any number of processes.
//
// Threads: an MpiGroup belongs to the thread that created it (MPI is initialised with
// MPI_THREAD_FUNNELED: only the main thread calls MPI; OpenMP inside the ops is fine).

#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <span>
#include <string>

#include "softprompt/error.hpp"
#include "softprompt/train/collective.hpp"

namespace softprompt::dist {

namespace detail {

inline void check_mpi(int code, const char* call) {
    if (code == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING] = {};
    int length = 0;
    MPI_Error_string(code, text, &length);
    throw IoError(std::string(call) + " failed: " + std::string(text, std::size_t(length)));
}

}  // namespace detail

/// Whether an MPI launcher (mpirun/mpiexec of Open MPI, MPICH or any PMI/PMIx one) started this
/// process. A program that can also run alone (examples/prompt_tune) initialises MPI only then:
/// alone it never touches MPI, whose initialisation is slow and keeps allocations until exit.
inline bool started_by_mpi_launcher() {
    for (const char* name : {"OMPI_COMM_WORLD_SIZE", "PMIX_RANK", "PMI_RANK", "PMI_SIZE"})
        if (std::getenv(name) != nullptr) return true;
    return false;
}

/// MPI_Init_thread on construction (unless MPI is already initialised) and MPI_Finalize on
/// destruction (if this object initialised it). A program started without mpirun is a group of
/// one.
class MpiSession {
public:
    MpiSession(int& argc, char**& argv) {
        int initialized = 0;
        MPI_Initialized(&initialized);
        if (initialized) return;
        int provided = 0;
        detail::check_mpi(MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided),
                          "MPI_Init_thread");
        owns_ = true;
    }
    ~MpiSession() {
        int finalized = 0;
        MPI_Finalized(&finalized);
        if (owns_ && !finalized) MPI_Finalize();
    }
    MpiSession(const MpiSession&) = delete;
    MpiSession& operator=(const MpiSession&) = delete;

private:
    bool owns_ = false;
};

/// A communicator (MPI_COMM_WORLD by default) as a train::Collective. Errors of MPI calls come back
/// as IoError naming the call (the communicator's error handler is set to return them).
class MpiGroup final : public train::Collective {
public:
    explicit MpiGroup(MPI_Comm comm = MPI_COMM_WORLD) : comm_(comm) {
        detail::check_mpi(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN),
                          "MPI_Comm_set_errhandler");
        detail::check_mpi(MPI_Comm_rank(comm_, &rank_), "MPI_Comm_rank");
        detail::check_mpi(MPI_Comm_size(comm_, &size_), "MPI_Comm_size");
    }

    int rank() const override { return rank_; }
    int size() const override { return size_; }
    MPI_Comm comm() const { return comm_; }

    /// Ends every process of the job now, with `code` (MPI_Abort).
    [[noreturn]] void abort(int code) const {
        MPI_Abort(comm_, code);
        std::terminate();  // MPI_Abort does not return; this is for the compiler
    }

protected:
    void sum_in_place(std::span<std::int64_t> v) override {
        all_reduce(v.data(), v.size(), MPI_INT64_T, MPI_SUM);
    }
    void sum_in_place(std::span<double> v) override {
        all_reduce(v.data(), v.size(), MPI_DOUBLE, MPI_SUM);
    }
    void max_in_place(std::span<std::int64_t> v) override {
        all_reduce(v.data(), v.size(), MPI_INT64_T, MPI_MAX);
    }

private:
    void all_reduce(void* data, std::size_t count, MPI_Datatype type, MPI_Op op) {
        // MPI counts are int: large buffers go in pieces (every member cuts them the same way).
        constexpr std::size_t kPiece = std::size_t(1) << 30;
        int type_size = 0;
        MPI_Type_size(type, &type_size);
        auto* bytes = static_cast<char*>(data);
        for (std::size_t at = 0; at < count; at += kPiece) {
            const std::size_t n = std::min(kPiece, count - at);
            detail::check_mpi(MPI_Allreduce(MPI_IN_PLACE, bytes + at * std::size_t(type_size),
                                            int(n), type, op, comm_),
                              "MPI_Allreduce");
        }
    }

    MPI_Comm comm_;
    int rank_ = 0, size_ = 1;
};

/// Runs `body` and returns 0; if it throws, prints "rank R of N: <what>" to stderr and aborts
/// the whole job (MPI_Abort with exit code 1), so that no other process waits in a collective for
/// a member that has given up.
template <class Body>
int run_or_abort(const MpiGroup& group, Body&& body) {
    try {
        body();
        return 0;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "rank %d of %d: %s\n", group.rank(), group.size(), e.what());
    } catch (...) {
        std::fprintf(stderr, "rank %d of %d: unknown exception\n", group.rank(), group.size());
    }
    std::fflush(stderr);
    group.abort(1);
}

}  // namespace softprompt::dist
