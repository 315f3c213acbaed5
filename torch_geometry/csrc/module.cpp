// The Python extension module torch_geometry._C. Importing it runs the operator
// registrations (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL) compiled into it, and binds
// the C++ training state of hooks/ so that Python and LibTorch share one implementation.
#include <torch/extension.h>

#include <pybind11/stl.h>

#include "hooks/early_stopping.h"
#include "hooks/geometry_tracker.h"
#include "hooks/probe.h"
#include "hooks/summary.h"

namespace py = pybind11;
namespace hk = torch_geometry::hooks;

namespace {

py::dict row_to_dict(const hk::HistoryRow& r) {
  py::dict d;
  d["epoch"] = r.epoch;
  d["layer"] = r.layer;
  d["metric"] = r.metric;
  d["count"] = r.summary.count;
  d["mean"] = r.summary.mean;
  d["median"] = r.summary.median;
  d["q25"] = r.summary.q25;
  d["q75"] = r.summary.q75;
  d["min"] = r.summary.min;
  d["max"] = r.summary.max;
  return d;
}

py::list rows_to_list(const std::vector<hk::HistoryRow>& rows) {
  py::list out;
  for (const auto& r : rows) out.append(row_to_dict(r));
  return out;
}

// A C++ string that may hold bytes that are not UTF-8 (a stop reason loaded from a state
// dict): undecodable bytes become U+FFFD instead of raising UnicodeDecodeError.
py::str to_str(const std::string& s) {
  PyObject* o = PyUnicode_DecodeUTF8(s.data(), static_cast<Py_ssize_t>(s.size()), "replace");
  if (o == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::str>(o);
}

// A getter that takes the object's lock: called without the GIL (a thread waiting for the
// lock must not hold the GIL that the lock's holder may need), the result converted after.
template <typename C, typename R>
auto unlocked_get(R (C::*getter)() const) {
  return [getter](const C& self) {
    py::gil_scoped_release release;
    return (self.*getter)();
  };
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "torch_geometry C++ core: operators are in torch.ops.torch_geometry";
  m.attr("__version__") = "0.1.0";

  py::class_<hk::Summary>(m, "Summary")
      .def_readonly("count", &hk::Summary::count)
      .def_readonly("mean", &hk::Summary::mean)
      .def_readonly("median", &hk::Summary::median)
      .def_readonly("q25", &hk::Summary::q25)
      .def_readonly("q75", &hk::Summary::q75)
      .def_readonly("min", &hk::Summary::min)
      .def_readonly("max", &hk::Summary::max)
      .def_readonly("bin_edges", &hk::Summary::bin_edges)
      .def_readonly("hist", &hk::Summary::hist);
  m.def("summarize", &hk::summarize, py::arg("values"), py::arg("bins") = 20,
        py::arg("include") = py::none());
  m.def("probe_subset", &hk::probe_subset, py::arg("n"), py::arg("max_points"),
        py::arg("labels") = py::none(), py::arg("seed") = 0);
  m.def("reduce_activations", &hk::reduce_activations, py::arg("activations"),
        py::arg("reduce"));
  m.attr("DEFAULT_REDUCE") = hk::kDefaultReduce;

  py::class_<hk::TrackerOptions>(m, "TrackerOptions")
      .def(py::init<>())
      .def_readwrite("k", &hk::TrackerOptions::k)
      .def_readwrite("kernel", &hk::TrackerOptions::kernel)
      .def_readwrite("candidate_metric", &hk::TrackerOptions::candidate_metric)
      .def_readwrite("reduce", &hk::TrackerOptions::reduce)
      .def_readwrite("alpha", &hk::TrackerOptions::alpha)
      .def_readwrite("bins", &hk::TrackerOptions::bins);

  py::class_<hk::GeometryTracker>(m, "GeometryTrackerCore")
      .def(py::init<std::vector<std::string>, hk::TrackerOptions>(), py::arg("layers"),
           py::arg("options"))
      .def("set_labels", &hk::GeometryTracker::set_labels, py::arg("labels"),
           py::call_guard<py::gil_scoped_release>())
      .def(
          "step",
          [](hk::GeometryTracker& self, int64_t epoch,
             const std::map<std::string, at::Tensor>& acts,
             const std::map<std::string, hk::GeometryTracker::Graph>& graphs) {
            std::vector<hk::HistoryRow> rows;
            {
              py::gil_scoped_release release;
              rows = self.step(epoch, acts, graphs);
            }
            return rows_to_list(rows);
          },
          py::arg("epoch"), py::arg("activations"),
          py::arg("graphs") = std::map<std::string, hk::GeometryTracker::Graph>{})
      .def_property_readonly("history",
                             [](const hk::GeometryTracker& self) {
                               std::vector<hk::HistoryRow> rows;
                               {
                                 py::gil_scoped_release release;
                                 rows = self.history();
                               }
                               return rows_to_list(rows);
                             })
      .def_property_readonly("last_epoch", unlocked_get(&hk::GeometryTracker::last_epoch))
      .def_property_readonly("layers", &hk::GeometryTracker::layers)
      .def("to_json", &hk::GeometryTracker::to_json, py::call_guard<py::gil_scoped_release>())
      .def("to_csv", &hk::GeometryTracker::to_csv, py::call_guard<py::gil_scoped_release>())
      .def("state_dict", &hk::GeometryTracker::state_dict,
           py::call_guard<py::gil_scoped_release>())
      .def("load_state_dict", &hk::GeometryTracker::load_state_dict, py::arg("state"),
           py::call_guard<py::gil_scoped_release>());

  py::class_<hk::EarlyStoppingOptions>(m, "EarlyStoppingOptions")
      .def(py::init<>())
      .def_readwrite("mode", &hk::EarlyStoppingOptions::mode)
      .def_readwrite("patience", &hk::EarlyStoppingOptions::patience)
      .def_readwrite("min_delta", &hk::EarlyStoppingOptions::min_delta)
      .def_readwrite("auto_min_delta", &hk::EarlyStoppingOptions::auto_min_delta)
      .def_readwrite("smoothing", &hk::EarlyStoppingOptions::smoothing)
      .def_readwrite("k", &hk::EarlyStoppingOptions::k)
      .def_readwrite("kernel", &hk::EarlyStoppingOptions::kernel)
      .def_readwrite("candidate_metric", &hk::EarlyStoppingOptions::candidate_metric)
      .def_readwrite("reduce", &hk::EarlyStoppingOptions::reduce)
      .def_readwrite("restore_best_weights", &hk::EarlyStoppingOptions::restore_best_weights)
      .def_readwrite("restore_on_stop", &hk::EarlyStoppingOptions::restore_on_stop);

  using ES = hk::NNKEarlyStopping;
  const auto released = py::call_guard<py::gil_scoped_release>();
  py::class_<ES>(m, "NNKEarlyStoppingCore")
      .def(py::init<hk::EarlyStoppingOptions>(), py::arg("options"))
      .def_property_readonly("options", &ES::options)
      .def("set_labels", &ES::set_labels, py::arg("labels"), released)
      .def("watch", &ES::watch, py::arg("params"), py::arg("extra") = std::vector<at::Tensor>{},
           released)
      .def("rebind", &ES::rebind, py::arg("params"), py::arg("extra") = std::vector<at::Tensor>{},
           released)
      .def("step", &ES::step, py::arg("epoch"), py::arg("activations"), released)
      .def("score", &ES::score, py::arg("activations"), released)
      .def("update", &ES::update, py::arg("epoch"), py::arg("scores"), released)
      .def("finish", &ES::finish, py::arg("epoch"), released)
      .def("enforce", &ES::enforce, released)
      .def("mask_gradients", &ES::mask_gradients, released)
      .def_property_readonly("last_scores", unlocked_get(&ES::last_scores))
      .def_property_readonly("smoothed_scores", unlocked_get(&ES::smoothed_scores))
      .def_property_readonly("best_scores", unlocked_get(&ES::best_scores))
      .def_property_readonly("wait_counts", unlocked_get(&ES::wait_counts))
      .def_property_readonly("frozen_channels", unlocked_get(&ES::frozen_channels))
      .def_property_readonly("frozen_epochs", unlocked_get(&ES::frozen_epochs))
      .def_property_readonly("best_score", unlocked_get(&ES::best_score))
      .def_property_readonly("best_epoch", unlocked_get(&ES::best_epoch))
      .def_property_readonly("last_improvement_epoch", unlocked_get(&ES::last_improvement_epoch))
      .def_property_readonly("stopped_epoch", unlocked_get(&ES::stopped_epoch))
      .def_property_readonly("should_stop", unlocked_get(&ES::should_stop))
      .def_property_readonly("checks", unlocked_get(&ES::checks))
      .def_property_readonly("stop_reason",
                             [](const ES& self) {
                               std::string reason;
                               {
                                 py::gil_scoped_release release;
                                 reason = self.stop_reason();
                               }
                               return to_str(reason);
                             })
      .def("to_json", &ES::to_json, released)
      .def("state_dict", &ES::state_dict, released)
      .def("load_state_dict", &ES::load_state_dict, py::arg("state"), released);

  m.def(
      "rank_models",
      [](const std::vector<std::string>& names, const std::vector<at::Tensor>& acts,
         const at::Tensor& labels, int64_t k, const std::string& kernel, const std::string& reduce,
         const std::string& candidate_metric) {
        py::gil_scoped_release release;
        return hk::rank_models(names, acts, labels, k, kernel, reduce, candidate_metric);
      },
      py::arg("names"), py::arg("activations"), py::arg("labels"), py::arg("k") = 25,
      py::arg("kernel") = "cosine", py::arg("reduce") = "flatten",
      py::arg("candidate_metric") = "kernel");
}
