// `latim info`: what a checkpoint holds, checked the same way `latim run` checks it.
#include <boost/program_options.hpp>
#include <cstdio>
#include <iostream>

#include "cli/commands.hpp"
#include "latim/model.hpp"
#include "latim/safetensors.hpp"

namespace po = boost::program_options;

namespace latim::cli {

int info_command(int argc, char** argv) {
  po::options_description opts("latim info: print a checkpoint's configuration and tensors");
  std::string model;
  opts.add_options()("help,h", "this help")("model", po::value(&model)->required(),
                                            "model directory (config.json + safetensors)")(
      "tensors", "also list every tensor with dtype and shape");
  po::variables_map vm;
  po::store(po::command_line_parser(argc, argv).options(opts).run(), vm);
  if (vm.count("help")) {
    std::cout << opts << "\n";
    return 0;
  }
  po::notify(vm);
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
