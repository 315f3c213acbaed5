// The Python extension module torch_geometry._C. Importing it runs the operator
// registrations (TORCH_LIBRARY_FRAGMENT / TORCH_LIBRARY_IMPL) compiled into it, and binds
// the C++ training state of hooks/ so that Python and LibTorch share one implementation.
#include <torch/extension.h>

#include <pybind11/stl.h>

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
  m.def("summarize", &hk::summarize, py::arg("values"), py::arg("bins") = 20);
  m.def("probe_subset", &hk::probe_subset, py::arg("n"), py::arg("max_points"),
        py::arg("labels") = py::none(), py::arg("seed") = 0);
  m.def("reduce_activations", &hk::reduce_activations, py::arg("activations"),
        py::arg("reduce"));

  py::class_<hk::TrackerOptions>(m, "TrackerOptions")
      .def(py::init<>())
      .def_readwrite("k", &hk::TrackerOptions::k)
      .def_readwrite("kernel", &hk::TrackerOptions::kernel)
      .def_readwrite("reduce", &hk::TrackerOptions::reduce)
      .def_readwrite("alpha", &hk::TrackerOptions::alpha)
      .def_readwrite("bins", &hk::TrackerOptions::bins);

  py::class_<hk::GeometryTracker>(m, "GeometryTrackerCore")
      .def(py::init<std::vector<std::string>, hk::TrackerOptions>(), py::arg("layers"),
           py::arg("options"))
      .def("set_labels", &hk::GeometryTracker::set_labels, py::arg("labels"))
      .def(
          "step",
          [](hk::GeometryTracker& self, int64_t epoch,
             const std::map<std::string, at::Tensor>& acts) {
            std::vector<hk::HistoryRow> rows;
            {
              py::gil_scoped_release release;
              rows = self.step(epoch, acts);
            }
            return rows_to_list(rows);
          },
          py::arg("epoch"), py::arg("activations"))
      .def_property_readonly("history",
                             [](const hk::GeometryTracker& self) { return rows_to_list(self.history()); })
      .def_property_readonly("layers", &hk::GeometryTracker::layers)
      .def("to_json", &hk::GeometryTracker::to_json)
      .def("to_csv", &hk::GeometryTracker::to_csv);
}
