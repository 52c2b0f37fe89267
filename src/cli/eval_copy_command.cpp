// `latim eval-copy`: the paper's copying-task metrics (AUC, AP) computed from a map file.
#include "cli/commands.hpp"
#include "latim/error.hpp"

namespace latim::cli {

int eval_copy_command(int, char**) { fail("eval-copy: not implemented yet"); }

}  // namespace latim::cli
