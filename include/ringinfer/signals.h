#pragma once
// Graceful stop on SIGTERM / SIGUSR1 (Slurm preemption, `#SBATCH --signal=B:USR1@N`,
// forwarded to the ranks by the job script). The handler only sets a flag; the engine
// asks stop_requested() at every layer or decode step boundary, the ranks OR-reduce it
// so they stop together at the same step, flush the journal, and exit with
// kExitPreempted so the job script can requeue (DESIGN §6).
namespace ringinfer {

// "try again later" (EX_TEMPFAIL): the job stopped on a signal; finished documents are
// journaled and a re-run with the same command resumes.
inline constexpr int kExitPreempted = 75;

// Installs the handlers for SIGTERM and SIGUSR1 (idempotent).
void install_stop_handlers();

// True once this process received SIGTERM or SIGUSR1 (async-signal-safe flag).
bool stop_requested();

// The signal that set the flag (0 when none), for the message.
int stop_signal();

// For tests: set or clear the flag as if a signal arrived.
void set_stop_requested_for_testing(bool value);

// Thrown at a step boundary when any rank of the group saw a stop signal.
struct StopRequested {
  int signal = 0;
};

}  // namespace ringinfer
