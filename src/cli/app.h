// The beatfarm job from the command line to the finished video, on every rank.
#pragma once

namespace beatfarm::cli {

// Returns the process exit code (kExitOk, kExitBadInput, kExitFailure). A runtime failure
// on any rank while rendering aborts the whole job through MPI_Abort.
int main_entry(int argc, char** argv);

}  // namespace beatfarm::cli
