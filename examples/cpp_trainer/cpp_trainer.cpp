// A LibTorch trainer with torch_geometry: a small CNN on Fashion-MNIST, Taps on two layers,
// the geometry tracker on them every epoch and NNK early stopping per channel of conv2.
// No Python, no validation set: the probe set is a fixed, stratified part of the training
// data.
//
//   cpp_trainer [--data DIR] [--epochs N] [--subset M] [--probe P] [--out DIR]
//               [--patience K] [--k K] [--seed S] [--threads T]
//
// One line per epoch: loss, train accuracy, NNK leave-one-out error of each tracked layer
// (mean over the probe set), frozen channels of conv2. --out DIR writes history.json (the
// tracker) and early_stopping.json (the callback's state).
#include <torch/torch.h>
#include <torch_geometry/torch_geometry.h>

#include <zlib.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <map>
#include <stdexcept>
#include <string>
#include <sys/stat.h>
#include <vector>

namespace tg = torch_geometry::hooks;

namespace {

// ---- Fashion-MNIST from gzip'd IDX files ------------------------------------------------
std::vector<uint8_t> read_gz(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error("cannot open " + path + " (install dataset-fashion-mnist, "
                                   "or pass --data DIR)");
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  int n;
  while ((n = gzread(f, buf, sizeof(buf))) > 0) out.insert(out.end(), buf, buf + n);
  const bool failed = n < 0;
  gzclose(f);
  if (failed) throw std::runtime_error("cannot decompress " + path);
  return out;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return (uint32_t(b[at]) << 24) | (uint32_t(b[at + 1]) << 16) | (uint32_t(b[at + 2]) << 8) |
         uint32_t(b[at + 3]);
}

// IDX images (magic 0x803) -> float [N, 1, 28, 28] in [0, 1]; labels (0x801) -> int64 [N].
torch::Tensor read_images(const std::string& path) {
  const auto b = read_gz(path);
  if (b.size() < 16 || be32(b, 0) != 0x803) throw std::runtime_error(path + ": not IDX images");
  const int64_t n = be32(b, 4), h = be32(b, 8), w = be32(b, 12);
  if (b.size() != size_t(16 + n * h * w)) throw std::runtime_error(path + ": truncated");
  auto t = torch::from_blob(const_cast<uint8_t*>(b.data()) + 16, {n, 1, h, w}, torch::kUInt8);
  return t.to(torch::kFloat).div_(255.0);  // copies out of the buffer
}

torch::Tensor read_labels(const std::string& path) {
  const auto b = read_gz(path);
  if (b.size() < 8 || be32(b, 0) != 0x801) throw std::runtime_error(path + ": not IDX labels");
  const int64_t n = be32(b, 4);
  if (b.size() != size_t(8 + n)) throw std::runtime_error(path + ": truncated");
  return torch::from_blob(const_cast<uint8_t*>(b.data()) + 8, {n}, torch::kUInt8).to(torch::kLong);
}

// ---- the model: Taps mark the layers whose activations the probe pass records -----------
struct NetImpl : torch::nn::Module {
  torch::nn::Conv2d conv1{torch::nn::Conv2dOptions(1, 16, 3).padding(1)};
  torch::nn::Conv2d conv2{torch::nn::Conv2dOptions(16, 32, 3).padding(1)};
  torch::nn::Linear fc1{32 * 7 * 7, 64}, fc2{64, 10};
  torch::nn::Sequential features, classifier;

  NetImpl() {
    features = register_module("features", torch::nn::Sequential(
        conv1, torch::nn::ReLU(), torch::nn::MaxPool2d(2),
        conv2, torch::nn::ReLU(), tg::Tap("conv2"), torch::nn::MaxPool2d(2)));
    classifier = register_module("classifier", torch::nn::Sequential(
        torch::nn::Flatten(), fc1, torch::nn::ReLU(), tg::Tap("fc1"), fc2));
  }
  torch::Tensor forward(const torch::Tensor& x) { return classifier->forward(features->forward(x)); }
};
TORCH_MODULE(Net);

struct Args {
  std::string data = "/usr/share/datasets/fashion-mnist";
  std::string out;
  int64_t epochs = 10, subset = 0, probe = 1000, patience = 3, k = 25, batch = 64, threads = 0;
  uint64_t seed = 0;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    if (flag == "--help" || flag == "-h") {
      std::cout << "usage: cpp_trainer [--data DIR] [--epochs N] [--subset M] [--probe P] "
                   "[--out DIR] [--patience K] [--k K] [--seed S] [--threads T]\n";
      std::exit(0);
    }
    if (i + 1 >= argc) throw std::runtime_error(flag + " needs a value");
    const std::string v = argv[++i];
    if (flag == "--data") a.data = v;
    else if (flag == "--out") a.out = v;
    else if (flag == "--epochs") a.epochs = std::stoll(v);
    else if (flag == "--subset") a.subset = std::stoll(v);
    else if (flag == "--probe") a.probe = std::stoll(v);
    else if (flag == "--patience") a.patience = std::stoll(v);
    else if (flag == "--k") a.k = std::stoll(v);
    else if (flag == "--seed") a.seed = std::stoull(v);
    else if (flag == "--threads") a.threads = std::stoll(v);
    else throw std::runtime_error("unknown flag " + flag + " (see --help)");
  }
  if (a.epochs < 1 || a.subset < 0 || a.probe <= a.k)
    throw std::runtime_error("need --epochs >= 1, --subset >= 0 and --probe > --k");
  return a;
}

void write_file(const std::string& path, const std::string& text) {
  std::ofstream f(path);
  if (!(f << text)) throw std::runtime_error("cannot write " + path);
}

} // namespace

int main(int argc, char** argv) try {
  const Args args = parse(argc, argv);
  torch::manual_seed(static_cast<uint64_t>(args.seed));
  if (args.threads > 0) torch::set_num_threads(static_cast<int>(args.threads));  // 0: torch's
  auto x = read_images(args.data + "/train-images-idx3-ubyte.gz");
  auto y = read_labels(args.data + "/train-labels-idx1-ubyte.gz");
  if (args.subset > 0 && args.subset < x.size(0)) {
    const auto keep = tg::probe_subset(x.size(0), args.subset, y, args.seed);
    x = x.index_select(0, keep);
    y = y.index_select(0, keep);
  }
  x = (x - 0.2860) / 0.3530;
  const auto probe = tg::probe_subset(x.size(0), args.probe, y, args.seed + 1);
  const auto probe_x = x.index_select(0, probe), probe_y = y.index_select(0, probe);
  std::cout << "cpp_trainer: " << x.size(0) << " training images, probe set " << probe_x.size(0)
            << ", " << torch::get_num_threads() << " threads\n";

  Net net;
  torch::optim::SGD optimizer(net->parameters(), torch::optim::SGDOptions(0.05).momentum(0.9));

  tg::TrackerOptions track_opts;
  track_opts.k = args.k;
  tg::GeometryTracker tracker({"conv2", "fc1"}, track_opts);
  tracker.set_labels(probe_y);

  tg::EarlyStoppingOptions stop_opts;
  stop_opts.mode = "channel";
  stop_opts.patience = args.patience;
  stop_opts.k = args.k;
  tg::NNKEarlyStopping stopper(stop_opts);
  stopper.set_labels(probe_y);
  stopper.watch({net->conv2->weight, net->conv2->bias});

  const int64_t n = x.size(0);
  for (int64_t epoch = 0; epoch < args.epochs; ++epoch) {
    const auto t0 = std::chrono::steady_clock::now();
    net->train();
    const auto order = torch::randperm(n, torch::kLong);
    double loss_sum = 0;
    int64_t correct = 0;
    for (int64_t s = 0; s < n; s += args.batch) {
      const auto idx = order.slice(0, s, std::min(n, s + args.batch));
      const auto xb = x.index_select(0, idx), yb = y.index_select(0, idx);
      optimizer.zero_grad();
      const auto logits = net->forward(xb);
      const auto loss = torch::nn::functional::cross_entropy(logits, yb);
      loss.backward();
      stopper.mask_gradients();
      optimizer.step();
      stopper.enforce();  // frozen channels keep their values, momentum notwithstanding
      loss_sum += loss.item<double>() * idx.size(0);
      correct += logits.argmax(1).eq(yb).sum().item<int64_t>();
    }
    // The probe pass: eval mode, no_grad, the Taps record; training mode restored after.
    const auto acts = tg::run_probe(net, probe_x);
    std::map<std::string, double> loo;
    for (const auto& row : tracker.step(epoch, acts)) {
      if (row.metric == "loo_error") loo[row.layer] = row.summary.mean;
    }
    const bool stop = stopper.step(epoch, acts.at("conv2"));
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::cout << std::fixed << std::setprecision(4) << "epoch " << epoch << "  loss "
              << loss_sum / n << "  train_acc " << double(correct) / n << "  loo_error conv2 "
              << loo["conv2"] << " fc1 " << loo["fc1"] << "  frozen "
              << stopper.frozen_channels().size() << "/" << net->conv2->weight.size(0) << "  ("
              << std::setprecision(1) << secs << " s)" << std::endl;
    if (stop) {
      std::cout << "early stop at epoch " << epoch << ": " << stopper.stop_reason() << "\n";
      break;
    }
  }
  if (!args.out.empty()) {
    ::mkdir(args.out.c_str(), 0755);
    write_file(args.out + "/history.json", tracker.to_json());
    write_file(args.out + "/early_stopping.json", stopper.to_json());
    std::cout << "wrote " << args.out << "/history.json and early_stopping.json\n";
  }
  return 0;
} catch (const std::exception& e) {
  std::cerr << "cpp_trainer: " << e.what() << "\n";
  return 1;
}
