// Entry point: dispatches `latim <subcommand>` and turns every failure into a one-line
// message and a non-zero exit code.
#include <boost/program_options.hpp>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>

#include "cli/commands.hpp"
#include "latim/error.hpp"
#include "latim/version.hpp"
#include "model/cpu_ops.hpp"

namespace {

void print_usage() {
  std::printf(
      "latim %s: LaTIM token-to-token interaction maps for Mamba and Mamba-2 models\n\n"
      "usage: latim <command> [options]\n\n"
      "commands:\n"
      "  run        forward pass and interaction maps, written to an HDF5 file\n"
      "  info       print a checkpoint's configuration and tensors\n"
      "\n"
      "  latim <command> --help   options of one command\n"
      "  latim --version          program version\n",
      latim::kVersion);
}

}  // namespace

int main(int argc, char** argv) {
  latim::cpu::flush_denormals_to_zero();  // before any thread exists, so all inherit it
  const std::string blas_fallback = latim::cpu::choose_blas_kernels();  // before any BLAS call
  if (argc < 2 || !std::strcmp(argv[1], "--help") || !std::strcmp(argv[1], "-h")) {
    print_usage();
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::string blas = latim::cpu::blas_kernels();
    if (!blas_fallback.empty()) blas += " (its own choice for this CPU was " + blas_fallback + ")";
    std::printf("latim %s\n%s\n", latim::kVersion, blas.c_str());
    return 0;
  }
  const std::string cmd = argv[1];
  try {
    if (cmd == "run") return latim::cli::run_command(argc - 1, argv + 1);
    if (cmd == "info") return latim::cli::info_command(argc - 1, argv + 1);
    std::fprintf(stderr, "latim: unknown command '%s' (see latim --help)\n", cmd.c_str());
    return 2;
  } catch (const boost::program_options::error& e) {
    std::fprintf(stderr, "latim %s: %s (see latim %s --help)\n", cmd.c_str(), latim::printable(e.what()).c_str(),
                 cmd.c_str());
    return 2;
  } catch (const latim::Error& e) {
    std::fprintf(stderr, "latim: error: %s\n", latim::printable(e.what()).c_str());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "latim: error: out of host memory (try fewer tokens, fewer layers or more ranks)\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "latim: error: %s\n", latim::printable(e.what()).c_str());
    return 1;
  }
}
