// Subcommands of the `latim` program. Each parses its own options and returns an exit code.
#pragma once

namespace latim::cli {

int run_command(int argc, char** argv);
int info_command(int argc, char** argv);

}  // namespace latim::cli
