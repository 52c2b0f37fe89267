// `latim info`: what a checkpoint holds, checked the same way `latim run` checks it; or,
// with --file, where a `latim run` output file stands (complete, or how far it got).
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "cli/commands.hpp"
#include "latim/error.hpp"
#include "latim/hdf5_writer.hpp"
#include "latim/model.hpp"
#include "latim/safetensors.hpp"

namespace po = boost::program_options;

namespace latim::cli {

namespace {

// One screen on an output file: whether it is complete, how many row panels each layer has
// written (what --resume would skip), and how it was made.
int file_info(const std::string& path) {
  const Hdf5InteractionWriter f(path, Hdf5InteractionWriter::ReadOnlyTag{});
  const bool complete = f.get_int_attribute("complete") == 1;
  const std::vector<int> layers = f.layers_in_file();
  int64_t done = 0, total = 0;
  std::vector<std::string> lines;
  for (int l : layers) {
    std::string line = "  layer " + std::to_string(l) + ": ";
    try {
      const std::vector<uint8_t> flags = f.read_panel_flags(l);
      int64_t d = 0;
      for (uint8_t x : flags) d += x != 0;
      done += d;
      total += static_cast<int64_t>(flags.size());
      line += std::to_string(d) + " of " + std::to_string(flags.size()) + " row panels written";
    } catch (const Error&) {
      line += "no panel record";
    }
    lines.push_back(line);
  }
  std::printf("%s: latim output, format_version %lld, %s\n", path.c_str(),
              static_cast<long long>(f.get_int_attribute("format_version")),
              complete ? "complete"
                       : ("incomplete: " + std::to_string(done) + " of " + std::to_string(total) +
                          " row panels written (continue it with latim run ... --resume)")
                             .c_str());
  std::printf("tokens: %lld, map chunk edge %lld, layers mapped: %zu\n", static_cast<long long>(f.n_tokens()),
              static_cast<long long>(f.map_chunk()), layers.size());
  for (const char* a : {"program_version", "backend", "device", "command_line", "plan"}) {
    const std::string v = f.get_string_attribute(a);
    if (!v.empty()) std::printf("%s: %s\n", a, printable(v).c_str());
  }
  if (!complete)
    for (const auto& line : lines) std::printf("%s\n", line.c_str());
  return 0;
}

}  // namespace

int info_command(int argc, char** argv) {
  po::options_description opts(
      "latim info: print a checkpoint's configuration and tensors, or where an output file stands");
  std::string model, file;
  opts.add_options()("help,h", "this help")("model", po::value(&model), "model directory (config.json + safetensors)")(
      "tensors", "also list every tensor with dtype and shape")(
      "file", po::value(&file), "a latim run output file: complete, or how many row panels each layer has written");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  po::notify(vm);
  if (model.empty() == file.empty()) fail("latim info: give either --model DIR or --file OUT.h5");
  if (!file.empty()) return file_info(file);
  const ModelWeights w = load_model(model);  // validates every tensor
  std::printf("%s\n", w.config.to_json().c_str());
  if (vm.count("tensors")) {
    Checkpoint ck(model);
    for (const auto& n : ck.names()) {
      const TensorView* t = ck.find(n);
      std::printf("%-60s %-5s %s\n", n.c_str(), to_string(t->dtype), t->shape_string().c_str());
    }
  }
  return 0;
}

}  // namespace latim::cli
